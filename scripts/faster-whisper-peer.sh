#!/usr/bin/env bash
# The faster-whisper peer of the speech-to-text benchmark (earshot-bench asr): installs
# PyPI's faster-whisper (pinned) into a virtualenv outside the clone, then runs
# scripts/faster_whisper_peer.py with the arguments given. Only the full bench run uses
# it; `earshot-bench --quick` (CI) never does, so CI installs nothing from here.
#
# Usage: scripts/faster-whisper-peer.sh --install          # install only, print the python
#        scripts/faster-whisper-peer.sh [peer arguments]   # install if missing, run the peer
# Environment: EARSHOT_VENV (default $HOME/.cache/earshot/venv).
set -euo pipefail

# The version the figures in BENCHMARKS.md were measured with.
PACKAGE="faster-whisper==1.2.1"

venv="${EARSHOT_VENV:-$HOME/.cache/earshot/venv}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
fail() { echo "faster-whisper-peer: error: $*" >&2; exit 1; }

if ! "$venv/bin/python" -c 'import faster_whisper' 2>/dev/null; then
  command -v python3 >/dev/null || fail "python3 is not installed (apt-get install -y python3 python3-venv)"
  echo "faster-whisper-peer: installing $PACKAGE into $venv" >&2
  python3 -m venv "$venv" || fail "cannot create a virtualenv in $venv (apt-get install -y python3-venv)"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$PACKAGE" >&2 \
    || fail "pip could not install $PACKAGE (it needs PyPI)"
fi

if [ "${1:-}" = "--install" ]; then
  echo "$venv/bin/python"
  exit 0
fi
exec "$venv/bin/python" "$here/faster_whisper_peer.py" "$@"
