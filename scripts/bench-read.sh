#!/usr/bin/env bash
# A cold full read of an image's tree (issue 13, target 2): `tar -cf - . | wc -c` in this
# tool's mount against fuse-overlayfs and kernel overlayfs over the same tree extracted, page
# cache dropped before each run, medians of RUNS runs. The image: the `many` fixture (25,000
# small files) plus a gzip layer of 8 text-like files of 48 MB (this machine's benchmark image
# needs debootstrap; scripts/bench-mount.sh uses it where it was built).
#
#   scripts/bench-read.sh [RUNS]
set -euo pipefail
runs=${1:-3}
source "$(dirname "$0")/lib/bench.sh"
bench_setup read

mixed_image
"$bin/umoci" unpack --cache-dir "$work/cache" --image "$work/L:mixed" "$work/b" >/dev/null
"$bin/umoci" raw unpack --cache-dir "$work/cache" --image "$work/L:mixed" "$work/lower"
mkdir -p "$work/fo/u" "$work/fo/w" "$work/fo/m" "$work/ko/u" "$work/ko/w" "$work/ko/m"
fuse-overlayfs -o "lowerdir=$work/lower,upperdir=$work/fo/u,workdir=$work/fo/w" "$work/fo/m" 2>/dev/null
mount -t overlay overlay -o "lowerdir=$work/lower,upperdir=$work/ko/u,workdir=$work/ko/w" "$work/ko/m"

read_tree() {
    cold
    local t0 t1
    t0=$(date +%s.%N)
    (cd "$1" && tar -cf - . | wc -c) > /dev/null
    t1=$(date +%s.%N)
    echo "$t1 - $t0" | bc -l
}
declare -A times
for _ in $(seq "$runs"); do
    for where in b/rootfs fo/m ko/m; do times[$where]+="$(read_tree "$work/$where") "; done
done
ours=$(printf '%s\n' ${times[b/rootfs]} | median)
fuse=$(printf '%s\n' ${times[fo/m]} | median)
kernel=$(printf '%s\n' ${times[ko/m]} | median)

printf '%-48s %9s %8s\n' "cold tar -cf of the tree (median of $runs)" "seconds" "ours /"
printf '%-48s %8.3fs %7s\n' "this tool's mount" "$ours" ""
printf '%-48s %8.3fs %7.2fx\n' "fuse-overlayfs over the extracted tree" "$fuse" "$(echo "$ours / $fuse" | bc -l)"
printf '%-48s %8.3fs %7.2fx\n' "kernel overlayfs over the extracted tree" "$kernel" "$(echo "$ours / $kernel" | bc -l)"
