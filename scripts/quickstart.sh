#!/usr/bin/env bash
# The README's first command: installs what is needed, builds umoci, and runs the main job on
# the embedded default image, in ./demo (or $DEMO_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
command -v swift >/dev/null 2>&1 || export PATH="/opt/swift/usr/bin:$PATH"
umoci="$(swift build --show-bin-path)/umoci"
demo="${DEMO_DIR:-$PWD/demo}"
rm -rf "$demo"
mkdir -p "$demo"
step() { printf '\n$ %s\n' "$*"; "$@"; }

step "$umoci" init --layout "$demo/image"
step "$umoci" new --image "$demo/image:latest"
step "$umoci" config --image "$demo/image:latest" --author "Quick Start <qs@example.com>" \
    --config.env GREETING=hello --config.cmd /bin/sh --history.comment "quick start"
step "$umoci" tag --image "$demo/image:latest" v1
step "$umoci" ls --layout "$demo/image"
step "$umoci" stat --image "$demo/image:v1"
step /usr/bin/umoci stat --image "$demo/image:v1"
step skopeo inspect "oci:$demo/image:v1"
