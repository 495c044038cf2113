#!/usr/bin/env bash
# Layer index benchmarks (issue: random access into an image's layers), on the Debian
# benchmark image, side by side with the named peers in the same run. Prints medians of
# RUNS runs (default 3) and the ratios the targets are stated in.
#
#   scripts/bench-layers.sh [RUNS]
#
# Needs root (drops the page cache where a cold read is measured).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
bash scripts/setup.sh >/dev/null
command -v swift >/dev/null 2>&1 || export PATH="/opt/swift/usr/bin:$PATH"
for p in pigz isal; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || \
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$p" >/dev/null
done
bash scripts/build-bench-image.sh >/dev/null
swift build -c release > /tmp/umoci-bench-build.log 2>&1 || { cat /tmp/umoci-bench-build.log; exit 1; }
bin=$(swift build -c release --show-bin-path)
image=bench-work/debian:bench
layout=bench-work/debian
work=$(mktemp -d /tmp/umoci-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT

# The image's layer blobs, in order.
python3 - "$layout" > "$work/layers" <<'EOF'
import json, sys
layout = sys.argv[1]
index = json.load(open(layout + "/index.json"))
m = [d for d in index["manifests"] if d.get("annotations", {}).get("org.opencontainers.image.ref.name") == "bench"][0]
manifest = json.load(open(layout + "/blobs/sha256/" + m["digest"][7:]))
for l in manifest["layers"]:
    print(layout + "/blobs/sha256/" + l["digest"][7:])
EOF
cores=$(nproc)

# median of the numbers on stdin
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
# seconds a command takes
seconds() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null 2>&1; t1=$(date +%s.%N); echo "$t1 - $t0" | bc -l; }
timed() { local xs=(); for _ in $(seq "$runs"); do xs+=("$("$@")"); done; printf '%s\n' "${xs[@]}" | median; }
# Like timed, but runs a preparation (not timed) before each run.
timed_after() { local prep=$1; shift; local xs=(); for _ in $(seq "$runs"); do $prep; xs+=("$("$@")"); done; printf '%s\n' "${xs[@]}" | median; }

floor_pigz() { xargs -P "$cores" -I{} sh -c 'pigz -dc {} | openssl dgst -sha256' < "$work/layers"; }
floor_igzip() { xargs -P "$cores" -I{} sh -c 'igzip -dc {} | openssl dgst -sha256' < "$work/layers"; }
ours_cold_index() { rm -rf "$work/cache"; "$bin/umoci-bench" index "$image" "$work/cache"; }
# Removing the previous tree (and writing it back) is not part of what is measured.
clear_trees() { rm -rf "$work/rootfs" "$work/theirs"; sync; }
clear_trees_and_cache() { clear_trees; rm -rf "$work/cache"; }
ours_raw_unpack() { "$bin/umoci" raw unpack --cache-dir "$work/cache" --image "$image" "$work/rootfs"; }
umoci_raw_unpack() { /usr/bin/umoci raw unpack --image "$image" "$work/theirs"; }

# Warm the page cache for the blobs so every contender reads them from memory.
cat $(cat "$work/layers") > /dev/null

t_pigz=$(timed seconds floor_pigz)
t_igzip=$(timed seconds floor_igzip)
t_index=$(timed seconds ours_cold_index)
t_ours_unpack_cold=$(timed_after clear_trees_and_cache seconds ours_raw_unpack)
uncompressed=$("$bin/umoci-bench" index "$image" "$work/cache" | sed -n 's/.*uncompressed_bytes \([0-9]*\).*/\1/p')
t_ours_unpack=$(timed_after clear_trees seconds ours_raw_unpack)
t_umoci_unpack=$(timed_after clear_trees seconds umoci_raw_unpack)
ours_raw_unpack
open_ms=$("$bin/umoci-bench" open "$image" "$work/cache" 20 | awk '{print $2}')
cache_bytes=$(du -sb "$work/cache" | awk '{print $1}')
big=$(python3 - "$work/rootfs" <<'EOF'
import os, sys
root = sys.argv[1]
best = max(((os.path.getsize(os.path.join(d, f)), os.path.join(d, f)) for d, _, fs in os.walk(root) for f in fs
            if os.path.isfile(os.path.join(d, f)) and not os.path.islink(os.path.join(d, f))))
print(os.path.relpath(best[1], root))
EOF
)
sync; echo 3 > /proc/sys/vm/drop_caches
read_line=$("$bin/umoci-bench" read "$image" "$work/cache" "$big" 200)

echo "Layer index benchmarks, $(date -u +%Y-%m-%dT%H:%MZ), $cores cores, median of $runs runs"
echo "image: $image, $(wc -l < "$work/layers") layers, $uncompressed bytes uncompressed"
printf '%-58s %10s %10s\n' "measurement" "seconds" "ratio"
printf '%-58s %10.2f %10s\n' "floor: pigz -dc | openssl dgst -sha256, layers in parallel" "$t_pigz" "1.00"
printf '%-58s %10.2f %10.2f\n' "floor (stretch): igzip -dc | openssl dgst -sha256" "$t_igzip" "$(echo "$t_igzip / $t_pigz" | bc -l)"
printf '%-58s %10.2f %10.2f  (target <= 1.30 x pigz floor)\n' "this tool: cold index of the whole image" "$t_index" "$(echo "$t_index / $t_pigz" | bc -l)"
printf '%-58s %10.2f %10.2f\n' "Debian umoci raw unpack" "$t_umoci_unpack" "1.00"
printf '%-58s %10.2f %10.2f  (umoci / this; target >= 1.5)\n' "this tool: raw unpack, warm index" "$t_ours_unpack" "$(echo "$t_umoci_unpack / $t_ours_unpack" | bc -l)"
printf '%-58s %10.2f %10.2f  (umoci / this)\n' "this tool: raw unpack, cold index" "$t_ours_unpack_cold" "$(echo "$t_umoci_unpack / $t_ours_unpack_cold" | bc -l)"
printf '%-58s %10s ms     (target <= 50 ms)\n' "open the merged view, warm cache (median of 20)" "$open_ms"
printf '%-58s %10s bytes  %.2f%% of uncompressed (target <= 5%%)\n' "index cache size" "$cache_bytes" "$(echo "100 * $cache_bytes / $uncompressed" | bc -l)"
printf '%-58s %s  (target median <= 5 ms)\n' "cold 4 KiB reads of $big" "$read_line"
