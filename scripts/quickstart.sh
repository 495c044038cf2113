#!/usr/bin/env bash
# The README's first command: installs what is needed, builds umoci, and runs the main job on
# the embedded default image (a small image made from Debian's busybox-static), in ./demo (or
# $DEMO_DIR): unpack (a copy-on-write mount), runc run, a change, repack, unpack of the result.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
command -v swift >/dev/null 2>&1 || export PATH="/opt/swift/usr/bin:$PATH"
umoci="$(swift build --show-bin-path)/umoci"
demo="${DEMO_DIR:-$PWD/demo}"
for b in "$demo/bundle" "$demo/bundle2"; do
    [ -d "$b" ] && { "$umoci" umount "$b" 2>/dev/null || umount -l "$b/rootfs" 2>/dev/null || true; }
done
rm -rf "$demo"
mkdir -p "$demo"
trap 'for b in "$demo/bundle" "$demo/bundle2"; do "$umoci" umount "$b" 2>/dev/null || true; done' EXIT
step() { printf '\n$ %s\n' "$*"; "$@"; }

# The embedded default image: busybox-static plus a passwd with a non-root user.
python3 scripts/fixtures/make_image.py "$demo/image" busybox latest
step "$umoci" config --image "$demo/image:latest" --author "Quick Start <qs@example.com>" \
    --config.user user --config.cmd /bin/sh --config.cmd -c \
    --config.cmd 'id; cat /etc/os-release; echo written-in-container > /home/user/hello' --history.comment "quick start"
step "$umoci" unpack --image "$demo/image:latest" "$demo/bundle"
step ls -l "$demo/bundle"
# runc needs terminal=false when not run from a terminal.
python3 -c 'import json,sys; p=sys.argv[1]; c=json.load(open(p)); c["process"]["terminal"]=False; json.dump(c,open(p,"w"))' "$demo/bundle/config.json"
step runc run -b "$demo/bundle" "umoci-quickstart-$$"
step sh -c "echo 'some change' > '$demo/bundle/rootfs/my_change'"
step find "$demo/bundle/upper"
step "$umoci" repack --image "$demo/image:new" "$demo/bundle"
step "$umoci" unpack --image "$demo/image:new" "$demo/bundle2"
step cat "$demo/bundle2/rootfs/my_change" "$demo/bundle2/rootfs/home/user/hello"
step "$umoci" stat --image "$demo/image:new"
step /usr/bin/umoci stat --image "$demo/image:new"
step skopeo inspect "oci:$demo/image:new"
step "$umoci" umount "$demo/bundle"
step "$umoci" umount "$demo/bundle2"
