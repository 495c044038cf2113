#!/usr/bin/env bash
# Concurrent reads through the mount (issue 13, target 7): 8 processes reading 8 different
# large files of one gzip layer at once, against one process reading one of them, page cache
# dropped and the index cache warm (the mount's own state as after unpack). Prints the
# aggregate throughput of each and how much CPU the mount server used per second of wall time
# (200% = both cores). Medians of RUNS runs.
#
#   scripts/bench-concurrency.sh [RUNS] [FILE_MB]
set -euo pipefail
runs=${1:-3}
file_mb=${2:-48}
source "$(dirname "$0")/lib/bench.sh"
bench_setup conc

# One gzip layer with 8 files of FILE_MB each (text-like data, about 3:1 compressible).
python3 - "$work/files" "$file_mb" <<'EOF'
import os, random, sys
out, mb = sys.argv[1], int(sys.argv[2])
os.makedirs(out, exist_ok=True)
rnd = random.Random(7)
words = [bytes(rnd.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(2, 9))) for _ in range(5000)]
block = b" ".join(rnd.choice(words) for _ in range(200_000))
for i in range(8):
    with open(f"{out}/f{i}", "wb") as f:
        left = mb << 20
        k = 0
        while left > 0:
            piece = block[k % 97:][:min(left, 1 << 20)] + bytes([i, k & 255])
            f.write(piece[:left])
            left -= len(piece[:left])
            k += 1
EOF
umoci init --layout "$work/L" >/dev/null 2>&1 || "$bin/umoci" init --layout "$work/L"
"$bin/umoci" new --image "$work/L:empty"
"$bin/umoci" insert --compress gzip --image "$work/L:empty" --tag big "$work/files" /data
"$bin/umoci" unpack --cache-dir "$work/cache" --image "$work/L:big" "$work/b" >/dev/null
pid=$(cat "$work/b/umoci-mount.pid")
cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }  # utime + stime, in ticks
tick=$(getconf CLK_TCK)

one() {
    cold
    local t0 t1 c0 c1
    c0=$(cpu); t0=$(date +%s.%N)
    cat "$work/b/rootfs/data/f0" > /dev/null
    t1=$(date +%s.%N); c1=$(cpu)
    echo "$(echo "$file_mb / ($t1 - $t0)" | bc -l) $(echo "100 * ($c1 - $c0) / $tick / ($t1 - $t0)" | bc -l)"
}
eight() {
    cold
    local t0 t1 c0 c1
    c0=$(cpu); t0=$(date +%s.%N)
    for i in 0 1 2 3 4 5 6 7; do cat "$work/b/rootfs/data/f$i" > /dev/null & done
    wait
    t1=$(date +%s.%N); c1=$(cpu)
    echo "$(echo "8 * $file_mb / ($t1 - $t0)" | bc -l) $(echo "100 * ($c1 - $c0) / $tick / ($t1 - $t0)" | bc -l)"
}
collect() {  # function -> "median_throughput median_cpu"
    local -a mbs=() cpus=()
    for _ in $(seq "$runs"); do read -r m c < <("$1"); mbs+=("$m"); cpus+=("$c"); done
    echo "$(printf '%s\n' "${mbs[@]}" | median) $(printf '%s\n' "${cpus[@]}" | median)"
}
read -r one_mb one_cpu < <(collect one)
read -r eight_mb eight_cpu < <(collect eight)
"$bin/umoci" umount "$work/b" >/dev/null

printf '%-40s %12s %16s\n' "reads through the mount (cold)" "MB/s" "server CPU"
printf '%-40s %12.0f %15.0f%%\n' "1 reader, 1 file" "$one_mb" "$one_cpu"
printf '%-40s %12.0f %15.0f%%\n' "8 readers, 8 files at once (aggregate)" "$eight_mb" "$eight_cpu"
printf '%-40s %11.2fx\n' "8 readers / 1 reader" "$(echo "$eight_mb / $one_mb" | bc -l)"
