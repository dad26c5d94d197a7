#!/usr/bin/env bash
# Runs Earshot on embedded defaults with everything it needs for audio in, words out:
# installs what is missing (the wasm target; Debian's redis-server and unzip, with
# apt-get when root or through sudo), fetches the Whisper model (scripts/fetch-model.sh),
# builds the components, then runs `earshot up`: SQLite key-value, a private Redis, the
# local speech-to-text worker. Arguments go to `earshot up` (e.g. --listen 0.0.0.0:3000).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "earshot: $*" >&2; }

rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v unzip >/dev/null || missing+=(unzip)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  elif command -v sudo >/dev/null && command -v apt-get >/dev/null; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  else
    say "missing ${missing[*]}: install them (without redis-server audio and transcripts are not stored)"
  fi
fi

if ! bash scripts/fetch-model.sh >/dev/null; then
  say "no speech model (see above): running without speech-to-text"
fi

exec cargo run -- up --build "$@"
