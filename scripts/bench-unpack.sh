#!/usr/bin/env bash
# Cold `umoci unpack` of the benchmark image against the time to inflate and hash its layers
# (issue 13, target 1): the page cache is dropped and the index cache emptied before each run,
# so unpack reads, inflates, hashes and indexes every layer before the mount is served. The
# floors inflate every layer and hash its output, layers 2 at a time (one per core): ISA-L's
# `igzip -dc | openssl dgst -sha256` (SHA-NI; the target: unpack <= 1.2 x this), the same with
# coreutils' slower `sha256sum`, and `pigz -dc | openssl dgst -sha256`; the peer is Debian
# umoci's `unpack` (an extraction). Medians of RUNS runs (Debian's umoci: of min(RUNS, 3)).
#
#   scripts/bench-unpack.sh [RUNS] [IMAGE]     IMAGE defaults to bench-work/debian:bench
#   UMOCI_BIN=DIR scripts/bench-unpack.sh      times the umoci in DIR instead of this checkout's
set -euo pipefail
runs=${1:-5}
source "$(dirname "$0")/lib/bench.sh"
bench_setup unpack
bash scripts/build-bench-image.sh >/dev/null
image=${2:-bench-work/debian:bench}
layout=${image%:*}
tag=${image##*:}

python3 - "$layout" "$tag" > "$work/layers" <<'EOF'
import json, sys
layout, tag = sys.argv[1], sys.argv[2]
index = json.load(open(layout + "/index.json"))
m = [d for d in index["manifests"] if d.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag][0]
manifest = json.load(open(layout + "/blobs/sha256/" + m["digest"][7:]))
for l in manifest["layers"]:
    print(layout + "/blobs/sha256/" + l["digest"][7:])
EOF

floor() { cold; seconds xargs -P 2 -I{} sh -c "$1 -dc {} | $2" < "$work/layers"; }
ours() {
    rm -rf "$work/cache"
    cold
    seconds "$bin/umoci" unpack --cache-dir "$work/cache" --image "$image" "$work/b"
    "$bin/umoci" umount "$work/b" >/dev/null 2>&1 || true
    rm -rf "$work/b"
}
theirs() { cold; seconds /usr/bin/umoci unpack --image "$image" "$work/t"; rm -rf "$work/t"; }
measure() { local n=$1; shift; local -a t=(); for _ in $(seq "$n"); do t+=("$("$@")"); done; printf '%s\n' "${t[@]}" | median; }

igzip_floor=$(measure "$runs" floor igzip "openssl dgst -sha256")
igzip_sum=$(measure "$runs" floor igzip sha256sum)
pigz_floor=$(measure "$runs" floor pigz "openssl dgst -sha256")
unpack=$(measure "$runs" ours)
debian=$(measure "$(( runs < 3 ? runs : 3 ))" theirs)

echo "cold unpack of $image ($(wc -l < "$work/layers") layers, $(cat $(cat "$work/layers") | wc -c) bytes compressed), $(date -u +%Y-%m-%dT%H:%MZ), median of $runs, load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-58s %8s %8s\n' "" "seconds" "/ igzip"
printf '%-58s %8.3f %8.2f\n' "floor: igzip -dc | openssl dgst -sha256, 2 layers at a time" "$igzip_floor" 1
printf '%-58s %8.3f %8.2f\n' "floor: igzip -dc | sha256sum, 2 layers at a time" "$igzip_sum" "$(echo "$igzip_sum / $igzip_floor" | bc -l)"
printf '%-58s %8.3f %8.2f\n' "floor: pigz -dc | openssl dgst -sha256, 2 layers at a time" "$pigz_floor" "$(echo "$pigz_floor / $igzip_floor" | bc -l)"
printf '%-58s %8.3f %8.2f  (target <= 1.20)\n' "this tool's umoci unpack, cold (index built, mounted)" "$unpack" "$(echo "$unpack / $igzip_floor" | bc -l)"
printf '%-58s %8.3f %8.2f\n' "Debian umoci unpack" "$debian" "$(echo "$debian / $igzip_floor" | bc -l)"
