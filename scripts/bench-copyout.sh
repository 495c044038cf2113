#!/usr/bin/env bash
# Copying an image's tree out of the mount (issue 13, target 3; what LXC's template does after
# unpack): `cp -a rootfs DEST` from this tool's mount, page cache dropped, against Debian's
# umoci `raw unpack` of the same image and `cp -a` of the tree already extracted. The image: the
# `many` fixture (25,000 small files) plus a gzip layer of eight 48 MB text-like files.
# Medians of RUNS runs.
#
#   scripts/bench-copyout.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
bash scripts/setup.sh >/dev/null
command -v swift >/dev/null 2>&1 || export PATH="/opt/swift/usr/bin:$PATH"
swift build -c release > /tmp/umoci-bench-build.log 2>&1 || { cat /tmp/umoci-bench-build.log; exit 1; }
bin=$(swift build -c release --show-bin-path)
work=$(mktemp -d /var/tmp/umoci-bench-copy.XXXXXX)
cleanup() {
    for m in $(awk -v w="$work" 'index($2, w) == 1 {print $2}' /proc/mounts | sort -r); do umount -l "$m" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
seconds() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null 2>&1; t1=$(date +%s.%N); echo "$t1 - $t0" | bc -l; }
cold() { sync; echo 3 > /proc/sys/vm/drop_caches; }

python3 scripts/fixtures/make_image.py "$work/L" many >/dev/null
python3 - "$work/files" <<'PY'
import os, random, sys
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
rnd = random.Random(7)
words = [bytes(rnd.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(2, 9))) for _ in range(5000)]
block = b" ".join(rnd.choice(words) for _ in range(200_000))
for i in range(8):
    with open(f"{out}/f{i}", "wb") as f:
        for k in range(48):
            f.write(block[(k * 7 + i) % 97:][:1 << 20])
PY
"$bin/umoci" insert --compress gzip --image "$work/L:many" --tag mixed "$work/files" /data
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
