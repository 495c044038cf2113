# Shared by the benchmark scripts (source it after `set -euo pipefail`): the release build, a
# work directory under /var/tmp unmounted and removed on exit, and the small helpers each
# script needs. A script may define bench_before_cleanup (say, to stop a background writer).

# bench_setup NAME: installs and builds; sets `bin` (the release binaries; UMOCI_BIN=DIR in the
# environment times another build's instead, for before/after figures) and `work`.
bench_setup() {
    cd "$(dirname "${BASH_SOURCE[0]}")/../.."
    bash scripts/setup.sh >/dev/null
    command -v swift >/dev/null 2>&1 || export PATH="/opt/swift/usr/bin:$PATH"
    swift build -c release > /tmp/umoci-bench-build.log 2>&1 || { cat /tmp/umoci-bench-build.log; exit 1; }
    bin=${UMOCI_BIN:-$(swift build -c release --show-bin-path)}
    work=$(mktemp -d "/var/tmp/umoci-bench-$1.XXXXXX")
    trap bench_cleanup EXIT
}

bench_cleanup() {
    if declare -F bench_before_cleanup >/dev/null; then bench_before_cleanup; fi
    for m in $(awk -v w="$work" 'index($2, w) == 1 {print $2}' /proc/mounts | sort -r); do umount -l "$m" 2>/dev/null || true; done
    rm -rf "$work"
}

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
seconds() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null 2>&1; t1=$(date +%s.%N); echo "$t1 - $t0" | bc -l; }
cold() { sync; echo 3 > /proc/sys/vm/drop_caches; }

# mixed_image: $work/L:mixed, the `many` fixture (25,000 small files) plus a gzip layer of eight
# text-like files of 48 MB under /data.
mixed_image() {
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
}
