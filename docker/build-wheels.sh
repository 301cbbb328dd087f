#!/usr/bin/env bash
# Build the wheels the image installs, on the host (the image build then needs no
# network): shardlite itself from the working tree, plus binary wheels of its
# dependencies for the image's Python (default 3.11, as on Debian bookworm and
# python:3.11-slim) and this machine's architecture.
#
#   docker/build-wheels.sh [PIP] [OUTDIR]     (defaults: .venv/bin/pip docker/wheels)
#
# Run from the repository root. Dependency wheels are fetched again only when
# pyproject.toml, the Python version or the architecture change.
set -euo pipefail

pip="${1:-.venv/bin/pip}"
out="${2:-docker/wheels}"
py="${SHARDLITE_IMAGE_PYTHON:-3.11}"
arch="$(uname -m)"
abi="cp${py/./}"

src="$(mktemp -d /tmp/shardlite-src.XXXXXX)"
trap 'rm -rf "$src" "$src.log"' EXIT
# A copy of just what the distribution is built from: the build writes build/
# and *.egg-info into its source tree, and this one must not be the checkout.
tar -c --exclude=__pycache__ --exclude='*.pyc' pyproject.toml README.md shardlite proto node replication stores |
    tar -x -C "$src"

mkdir -p "$out"
rm -f "$out"/shardlite-*.whl
# (setuptools' deprecation chatter is shown only when the build fails; a fixed
# SOURCE_DATE_EPOCH makes the wheel byte-identical for the same sources, so the image
# build's layer cache holds when nothing changed)
if ! SOURCE_DATE_EPOCH=315532800 "$pip" wheel --quiet --disable-pip-version-check --no-deps -w "$out" "$src" \
    >"$src.log" 2>&1; then
    cat "$src.log" >&2
    rm -f "$src.log"
    exit 1
fi
rm -f "$src.log"
wheel="$(ls "$out"/shardlite-*.whl)"

key="$(cat pyproject.toml <(echo "$py $arch"))"
key="$(printf '%s' "$key" | sha256sum | cut -d' ' -f1)"
if [[ -f "$out/.deps" && "$(cat "$out/.deps")" == "$key" ]]; then
    echo "build-wheels: $(basename "$wheel"); dependency wheels up to date"
    exit 0
fi
find "$out" -maxdepth 1 -name '*.whl' ! -name 'shardlite-*.whl' -delete
rm -f "$out/.deps"
"$pip" download --quiet --disable-pip-version-check --only-binary=:all: \
    --python-version "$py" --implementation cp --abi "$abi" --abi abi3 --abi none \
    --platform "manylinux2014_$arch" --platform "manylinux_2_17_$arch" \
    --platform "manylinux_2_28_$arch" --platform "manylinux_2_34_$arch" --platform any \
    -d "$out" "$wheel"
echo "$key" >"$out/.deps"
echo "build-wheels: $(find "$out" -maxdepth 1 -name '*.whl' -printf '%f ')"
