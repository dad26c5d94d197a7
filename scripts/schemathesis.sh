#!/usr/bin/env bash
# Fuzzes the live HTTP API from its own description (docs/openapi.json) with
# schemathesis: starts `earshot up` (embedded, private Redis, free port), runs bounded
# examples of every operation twice — with the admin key (the auth routes) and with a
# token of every scope for every meeting (the meeting routes) — and fails on any 5xx or
# any response the document does not describe (status, content type, headers, schema).
#
#   scripts/schemathesis.sh [max-examples-per-operation]   (default 50)
#
# schemathesis (PyPI, pinned) lives in the virtualenv outside the clone that .ci/run
# also uses ($EARSHOT_VENV, default ~/.cache/earshot/venv).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

# Bounded so the run takes a minute or two: 50 examples of each of 12 operations, plus
# schemathesis' coverage cases (about 1,000 requests in all).
max_examples="${1:-50}"
schemathesis_version=4.32.5

venv="${EARSHOT_VENV:-$HOME/.cache/earshot/venv}"
if [ "$("$venv/bin/st" --version 2>/dev/null || true)" != "st, version $schemathesis_version" ]; then
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$schemathesis_version"
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/earshot/target}"
export CARGO_INCREMENTAL=0
(cd components && env -u CARGO_TARGET_DIR cargo build --quiet --release --target wasm32-wasip2)
cargo build --quiet --bin earshot
bin="$CARGO_TARGET_DIR/debug/earshot"

state=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$state"
}
trap cleanup EXIT

(cd "$state" && EARSHOT_LOG=info exec "$bin" up --listen 127.0.0.1:0 --internal-listen 127.0.0.1:0 \
  --manifest "$root/spin.toml" --kv-path "$state/kv.db" --no-asr) >"$state/earshot.log" 2>&1 &
pid=$!
addr=
for _ in $(seq 1 300); do
  addr=$(python3 -c '
import json, sys
for line in open(sys.argv[1]):
    try:
        v = json.loads(line)
    except ValueError:
        continue
    if v.get("event") == "listening":
        print(v["address"]); break
' "$state/earshot.log" 2>/dev/null || true)
  [ -n "$addr" ] && break
  kill -0 "$pid" 2>/dev/null || { cat "$state/earshot.log"; echo "earshot exited before it listened" >&2; exit 1; }
  sleep 0.2
done
[ -n "$addr" ] || { cat "$state/earshot.log"; echo "earshot did not start" >&2; exit 1; }
base="http://$addr"
admin=$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["admin_key"])' "$state/dev-secrets.json")
token=$(curl -sf -XPOST "$base/api/v1/auth/token" -H "authorization: Bearer $admin" \
  -d '{"sub":"schemathesis","scope":"ingest subscribe publish admin","meetings":["*"],"ttl_s":3600}' |
  python3 -c 'import json,sys;print(json.load(sys.stdin)["token"])')

# Meeting `m1` (the document's example id) has had a capture agent, so the meeting routes
# get past "unknown meeting" into their real work (export, end, delete, intake).
"$bin" demo-wav "$state/demo.wav" >/dev/null
"$bin" stream --url "ws://$addr" --token "$token" --meeting m1 --speed 0 "$state/demo.wav" >/dev/null

checks=not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance
run() {
  local label=$1 credential=$2
  shift 2
  echo "== schemathesis: $label"
  "$venv/bin/st" run "$root/docs/openapi.json" --url "$base" --checks "$checks" \
    --max-examples "$max_examples" --seed 13 --request-timeout 20 --no-color \
    -H "Authorization: Bearer $credential" "$@"
}
status=0
run "auth routes with the admin key" "$admin" --include-tag auth || status=1
run "every other route with a token of every scope" "$token" --exclude-tag auth || status=1
if grep -q '"level":"ERROR"' "$state/earshot.log"; then
  echo "earshot logged errors during the run:" >&2
  grep '"level":"ERROR"' "$state/earshot.log" | head -20 >&2
fi
exit $status
