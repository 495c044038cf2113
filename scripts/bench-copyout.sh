#!/usr/bin/env bash
# Copying an image's tree out of the mount (issue 13, target 3; what LXC's template does after
# unpack): `cp -a rootfs DEST` from this tool's mount, page cache dropped, against Debian's
# umoci `raw unpack` of the same image and `cp -a` of the tree already extracted. The image: the
# `many` fixture (25,000 small files) plus a gzip layer of eight 48 MB text-like files.
# Medians of RUNS runs.
#
#   scripts/bench-copyout.sh [RUNS]
set -euo pipefail
runs=${1:-3}
source "$(dirname "$0")/lib/bench.sh"
bench_setup copy

mixed_image
"$bin/umoci" unpack --cache-dir "$work/cache" --image "$work/L:mixed" "$work/b" >/dev/null
"$bin/umoci" raw unpack --cache-dir "$work/cache" --image "$work/L:mixed" "$work/extracted"

n=0
ours() { n=$((n + 1)); cold; seconds cp -a "$work/b/rootfs" "$work/out$n"; rm -rf "$work/out$n"; }
theirs() { n=$((n + 1)); cold; seconds /usr/bin/umoci raw unpack --image "$work/L:mixed" "$work/out$n"; rm -rf "$work/out$n"; }
plain() { n=$((n + 1)); cold; seconds cp -a "$work/extracted" "$work/out$n"; rm -rf "$work/out$n"; }
measure() { local -a t=(); for _ in $(seq "$runs"); do t+=("$("$1")"); done; printf '%s\n' "${t[@]}" | median; }

a=$(measure ours)
b=$(measure theirs)
c=$(measure plain)
printf '%-52s %9s %8s\n' "copying the tree out (median of $runs, cold)" "seconds" "ours /"
printf '%-52s %8.3fs\n' "cp -a out of this tool's mount" "$a"
printf '%-52s %8.3fs %7.2fx\n' "Debian umoci raw unpack of the image" "$b" "$(echo "$a / $b" | bc -l)"
printf '%-52s %8.3fs %7.2fx\n' "cp -a of the extracted tree" "$c" "$(echo "$a / $c" | bc -l)"
