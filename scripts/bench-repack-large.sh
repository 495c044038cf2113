#!/usr/bin/env bash
# Repack of a large change (issue 13, target 5): about MB megabytes (default 300) of new files
# written into a bundle of the busybox test image, then repacked: by this tool from its mounted
# bundle, by Debian's umoci from a bundle it unpacked itself, and, as the floor,
# `tar -cf - -C DIR . | pigz` of the same files. The change: regular files copied from /usr/lib
# and /usr/share of this machine (1/2 and 1/3 of it, each in path order, no file over 16 MiB) and generated text-like files
# (the rest). Each run repacks the same change to a new tag (without --refresh-bundle, so upper/
# and Debian's bundle stay as they are). Medians of RUNS runs, page cache warm (the files were
# just written or repacked). Prints seconds, ratios and layer sizes, and, on the tar of the same
# files, ParallelGzipEncoder's time with ISA-L level 3 (what layers use) and with zlib level 6.
# BEFORE=/path/to/umoci adds a row for another build's repack of this tool's bundle.
#
#   [BEFORE=UMOCI] scripts/bench-repack-large.sh [RUNS] [MB]
set -euo pipefail
runs=${1:-3}
mb=${2:-300}
source "$(dirname "$0")/lib/bench.sh"
bench_setup large

python3 scripts/fixtures/make_image.py "$work/L" busybox >/dev/null

# The change, made once in $work/src; copied with plain cp into a new directory of each bundle.
python3 - "$work/src" "$mb" <<'PY'
import os, random, shutil, sys
out, mb = sys.argv[1], int(sys.argv[2])
budget = mb * 1000 * 1000
copied = 0
os.makedirs(out)
for top, share in (("/usr/lib", 3), ("/usr/share", 5)):
    for root, dirs, files in os.walk(top):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            if copied >= budget * share // 6:
                break
            if not os.path.isfile(path) or os.path.islink(path):
                continue
            size = os.path.getsize(path)
            if size > 16 << 20:
                continue
            dest = os.path.join(out, path.lstrip("/"))
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            try:
                shutil.copyfile(path, dest)
            except OSError:
                continue
            copied += size
rnd = random.Random(13)
words = [bytes(rnd.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(2, 10))) for _ in range(20000)]
os.makedirs(out + "/text")
i = 0
while copied < budget:
    n = min(budget - copied, rnd.randint(1 << 16, 8 << 20))
    lines = []
    size = 0
    while size < n:
        line = b" ".join(rnd.choice(words) for _ in range(rnd.randint(3, 14))) + b"\n"
        lines.append(line)
        size += len(line)
    with open("%s/text/f%04d.txt" % (out, i), "wb") as f:
        f.write(b"".join(lines)[:n])
    copied += n
    i += 1
PY
files=$(find "$work/src" -type f | wc -l)
bytes=$(du -sb "$work/src" | cut -f1)

"$bin/umoci" unpack --cache-dir "$work/cache" --image "$work/L:busybox" "$work/ours" >/dev/null
mkdir "$work/ours/rootfs/change"
cp -r "$work/src/." "$work/ours/rootfs/change/"
/usr/bin/umoci unpack --image "$work/L:busybox" "$work/theirs" >/dev/null
mkdir "$work/theirs/rootfs/change"
cp -r "$work/src/." "$work/theirs/rootfs/change/"
sync

# The size (or with a second argument, the digest) of the last layer of TAG's manifest.
layer_size() {
    python3 - "$work/L" "$1" "${2:-size}" <<'PY'
import json, sys
layout, tag, what = sys.argv[1], sys.argv[2], sys.argv[3]
for m in json.load(open(layout + "/index.json"))["manifests"]:
    if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
        manifest = json.load(open(layout + "/blobs/sha256/" + m["digest"].split(":")[1]))
        print(manifest["layers"][-1][what])
PY
}

# Each run repacks to its own tag: run I writes tags oursI and theirsI.
ours() { seconds "$bin/umoci" repack --image "$work/L:ours$1" "$work/ours"; }
theirs() { seconds /usr/bin/umoci repack --image "$work/L:theirs$1" "$work/theirs"; }
before() { seconds "$BEFORE" repack --image "$work/L:before$1" "$work/ours"; }
floor() { seconds sh -c "tar -cf - -C '$work/src' . | pigz > '$work/floor.tar.gz'"; }
# The engine choice on the same bytes: the tar of the change through ParallelGzipEncoder.
tar -cf "$work/src.tar" -C "$work/src" .
engine() { "$bin/umoci-bench" gzip "$work/src.tar" "$1" | awk '{print $2, $4}'; }
declare -A t size
load0=$(cut -d' ' -f1-3 /proc/loadavg)
for i in $(seq "$runs"); do  # interleaved, so that a burst of load elsewhere hits all of them
    t[ours]+="$(ours "$i") "
    t[theirs]+="$(theirs "$i") "
    t[floor]+="$(floor) "
    if [ -n "${BEFORE:-}" ]; then t[before]+="$(before "$i") "; fi
    for e in isal-3 zlib-6; do read -r s b < <(engine $e); t[$e]+="$s "; size[$e]=$b; done
done
load1=$(cut -d' ' -f1-3 /proc/loadavg)
med() { tr ' ' '\n' <<<"${t[$1]}" | grep . | median; }
ours_size=$(layer_size ours1)
theirs_size=$(layer_size theirs1)
floor_size=$(stat -c %s "$work/floor.tar.gz")
# Every run of this tool wrote the same layer.
digests=$(for i in $(seq "$runs"); do layer_size "ours$i" digest; done | sort -u | wc -l)
[ "$digests" -eq 1 ] || { echo "this tool's layers differ between runs" >&2; exit 1; }

row() { printf '%-50s %9.3f %12d %9.3f %9.2f\n' "$1" "$2" "$3" "$(echo "$bytes / $3" | bc -l)" "$(echo "$2 / $(med floor)" | bc -l)"; }
echo "Repack of a large change, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, median of $runs runs"
echo "change: $files files, $((bytes / 1000000)) MB; load average before: $load0, after: $load1"
printf '%-50s %9s %12s %9s %9s\n' "" "seconds" "gzip bytes" "ratio" "/ floor"
row "this tool: umoci repack (mounted bundle)" "$(med ours)" "$ours_size"
row "Debian umoci repack" "$(med theirs)" "$theirs_size"
row "tar -c | pigz (floor)" "$(med floor)" "$floor_size"
if [ -n "${BEFORE:-}" ]; then row "before: \$BEFORE umoci repack (mounted bundle)" "$(med before)" "$(layer_size before1)"; fi
row "  tar file through ParallelGzipEncoder, isal-3" "$(med isal-3)" "${size[isal-3]}"
row "  tar file through ParallelGzipEncoder, zlib-6" "$(med zlib-6)" "${size[zlib-6]}"
printf 'Debian umoci / this tool: %.2fx (target >= 2)\n' "$(echo "$(med theirs) / $(med ours)" | bc -l)"
printf 'this tool / tar|pigz:     %.2fx (target <= 1.3)\n' "$(echo "$(med ours) / $(med floor)" | bc -l)"
printf 'runs (s): ours %s| umoci %s| pigz %s\n' "${t[ours]}" "${t[theirs]}" "${t[floor]}"
if [ -n "${BEFORE:-}" ]; then echo "BEFORE=$BEFORE"; fi
