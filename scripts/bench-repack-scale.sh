#!/usr/bin/env bash
# Repack at scale (repack issue, "Scale"): an upper directory holding FILES small files (default
# 30000, in directories of 1000) and one BIG_GIB GiB file (default 2), repacked by this tool
# from the mounted bundle and by Debian's umoci from an extracted bundle holding the same
# change. Prints wall time and peak resident memory (GNU time's %M) side by side, and checks
# that both layers hold every file.
#
#   scripts/bench-repack-scale.sh [FILES] [BIG_GIB]
set -euo pipefail
cd "$(dirname "$0")/.."
files=${1:-30000}
gib=${2:-2}
bash scripts/setup.sh >/dev/null
command -v swift >/dev/null 2>&1 || export PATH="/opt/swift/usr/bin:$PATH"
swift build -c release > /tmp/umoci-bench-build.log 2>&1 || { cat /tmp/umoci-bench-build.log; exit 1; }
bin=$(swift build -c release --show-bin-path)
work=$(mktemp -d /tmp/umoci-bench-scale.XXXXXX)
cleanup() {
    for m in $(awk -v w="$work" 'index($2, w) == 1 {print $2}' /proc/mounts | sort -r); do umount -l "$m" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

python3 scripts/fixtures/make_image.py "$work/L" busybox >/dev/null

populate() {  # ROOTFS
    python3 - "$1/data" "$files" <<'EOF'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = "%s/d%03d" % (root, i // 1000)
    if i % 1000 == 0:
        os.makedirs(d, exist_ok=True)
    with open("%s/f%06d" % (d, i), "wb") as f:
        f.write(b"small file %d\n" % i * 20)
EOF
    yes "a line of the big file" | head -c "${gib}G" > "$1/data/big" || true
}
measure() {  # prints "seconds peak_kb"
    /usr/bin/time -f "%e %M" -o "$work/time" "$@" >/dev/null 2>"$work/stderr" || { cat "$work/stderr"; exit 1; }
    cat "$work/time"
}
entries() { tar -tzf "$work/L/blobs/sha256/$1" | grep -c '^data/d[0-9]*/f' || true; }
last_layer() {
    python3 - "$work/L" "$1" <<'EOF'
import json, sys
layout, tag = sys.argv[1], sys.argv[2]
for m in json.load(open(layout + "/index.json"))["manifests"]:
    if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
        manifest = json.load(open(layout + "/blobs/sha256/" + m["digest"].split(":")[1]))
        print(manifest["layers"][-1]["digest"].split(":")[1], manifest["layers"][-1]["size"])
EOF
}

"$bin/umoci" unpack --cache-dir "$work/cache" --image "$work/L:busybox" "$work/ours" >/dev/null
populate "$work/ours/rootfs"
read -r ours_s ours_kb < <(measure "$bin/umoci" repack --image "$work/L:scale-ours" "$work/ours")
"$bin/umoci" umount "$work/ours"
read -r ours_digest ours_size < <(last_layer scale-ours)
rm -rf "$work/ours"

/usr/bin/umoci unpack --image "$work/L:busybox" "$work/theirs" >/dev/null 2>&1
populate "$work/theirs/rootfs"
read -r theirs_s theirs_kb < <(measure /usr/bin/umoci repack --image "$work/L:scale-umoci" "$work/theirs")
read -r theirs_digest theirs_size < <(last_layer scale-umoci)
rm -rf "$work/theirs"

echo "Repack at scale, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores: $files small files and a ${gib} GiB file added"
printf '%-28s %10s %14s %14s %12s\n' "" "seconds" "peak RSS (MB)" "layer (MiB)" "small files"
printf '%-28s %10.2f %14d %14d %12d\n' "Debian umoci repack" "$theirs_s" "$((theirs_kb / 1024))" "$((theirs_size / 1048576))" "$(entries "$theirs_digest")"
printf '%-28s %10.2f %14d %14d %12d\n' "this tool: umoci repack" "$ours_s" "$((ours_kb / 1024))" "$((ours_size / 1048576))" "$(entries "$ours_digest")"
