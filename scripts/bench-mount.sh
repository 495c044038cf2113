#!/usr/bin/env bash
# Mount benchmarks (issue: umoci unpack mounts the image), on the Debian benchmark image, side by
# side with the named peers in the same run: Debian's umoci unpack, fuse-overlayfs over an
# extracted copy of the rootfs, and the extracted directory itself. Medians of RUNS runs.
#
#   scripts/bench-mount.sh [RUNS]
#
# Needs root (mounts, drops the page cache). Leaves no mount behind, even when interrupted.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
bash scripts/setup.sh >/dev/null
command -v swift >/dev/null 2>&1 || export PATH="/opt/swift/usr/bin:$PATH"
bash scripts/build-bench-image.sh >/dev/null
swift build -c release > /tmp/umoci-bench-build.log 2>&1 || { cat /tmp/umoci-bench-build.log; exit 1; }
bin=$(swift build -c release --show-bin-path)
image=bench-work/debian:bench
work=$(mktemp -d /tmp/umoci-bench-mount.XXXXXX)
cleanup() {
    for m in $(awk -v w="$work" 'index($2, w) == 1 {print $2}' /proc/mounts | sort -r); do umount -l "$m" 2>/dev/null || true; done
    pkill -f "umoci __serve $work" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
seconds() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null 2>&1; t1=$(date +%s.%N); echo "$t1 - $t0" | bc -l; }
timed() { local xs=(); for _ in $(seq "$runs"); do xs+=("$("$@")"); done; printf '%s\n' "${xs[@]}" | median; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }

# Removing the previous bundle is not part of what is measured.
clear_ours() { "$bin/umoci" umount "$work/ours" >/dev/null 2>&1 || true; rm -rf "$work/ours"; sync; }
clear_ours_and_cache() { clear_ours; rm -rf "$work/cache"; }
clear_theirs() { rm -rf "$work/theirs"; sync; }
ours_unpack() { "$bin/umoci" unpack --cache-dir "$work/cache" --image "$image" "$work/ours"; }
umoci_unpack() { /usr/bin/umoci unpack --image "$image" "$work/theirs"; }
timed_after() { local prep=$1; shift; local xs=(); for _ in $(seq "$runs"); do $prep; xs+=("$("$@")"); done; printf '%s\n' "${xs[@]}" | median; }

# The bundles' blobs in the page cache for every contender.
cat bench-work/debian/blobs/sha256/* > /dev/null
t_ours_cold=$(timed_after clear_ours_and_cache seconds ours_unpack)
t_ours_warm=$(timed_after clear_ours seconds ours_unpack)
t_umoci=$(timed_after clear_theirs seconds umoci_unpack)

# fuse-overlayfs over Debian umoci's extracted rootfs.
mkdir -p "$work/ovl/upper" "$work/ovl/work" "$work/ovl/mnt"
fuse-overlayfs -o "lowerdir=$work/theirs/rootfs,upperdir=$work/ovl/upper,workdir=$work/ovl/work" "$work/ovl/mnt"

read_all() { tar -cf - -C "$1" . 2>/dev/null | wc -c; }
walk() { find "$1" -printf '%s %m %u\n' | wc -l; }
measure_tree() {
    local root=$1 first second meta
    drop
    first=$(seconds read_all "$root")
    second=$(seconds read_all "$root")
    meta=$(seconds walk "$root")
    echo "$first $second $meta"
}
# Fresh mounts for the first pass: the servers start with empty caches too.
"$bin/umoci" umount "$work/ours"; "$bin/umoci" mount "$work/ours"
declare -A tree
for name in ours ovl dir; do
    case $name in
        ours) root="$work/ours/rootfs" ;;
        ovl) root="$work/ovl/mnt" ;;
        dir) root="$work/theirs/rootfs" ;;
    esac
    xs1=(); xs2=(); xs3=()
    for _ in $(seq "$runs"); do
        read -r a b c < <(measure_tree "$root")
        xs1+=("$a"); xs2+=("$b"); xs3+=("$c")
    done
    tree[$name]="$(printf '%s\n' "${xs1[@]}" | median) $(printf '%s\n' "${xs2[@]}" | median) $(printf '%s\n' "${xs3[@]}" | median)"
done
rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/$(cat "$work/ours/umoci-mount.pid")/status")
bytes=$(read_all "$work/ours/rootfs")

# runc run of python3 on the mount and on the extracted bundle.
python_cmd='["python3", "-c", "import json, sqlite3, email"]'
for b in "$work/ours" "$work/theirs"; do
    python3 - "$b/config.json" "$python_cmd" <<'EOF'
import json, sys
c = json.load(open(sys.argv[1]))
c["process"]["terminal"] = False
c["process"]["args"] = json.loads(sys.argv[2])
json.dump(c, open(sys.argv[1], "w"))
EOF
done
n=0
runc_once() { n=$((n + 1)); runc run -b "$1" "umoci-bench-$$-$RANDOM" >/dev/null 2>&1; }
t_runc_ours=$(timed seconds runc_once "$work/ours")
t_runc_dir=$(timed seconds runc_once "$work/theirs")
runc_ok=$(runc run -b "$work/ours" "umoci-bench-check-$$" 2>&1 && echo ok || echo FAILED)

fusermount3 -u "$work/ovl/mnt"
"$bin/umoci" umount "$work/ours"

ratio() { echo "$1 / $2" | bc -l; }
read -r o1 o2 o3 <<<"${tree[ours]}"
read -r v1 v2 v3 <<<"${tree[ovl]}"
read -r d1 d2 d3 <<<"${tree[dir]}"
echo "Mount benchmarks, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, median of $runs runs, image $image"
printf '%-52s %10s %10s\n' "measurement" "seconds" "ratio"
printf '%-52s %10.2f\n' "Debian umoci unpack" "$t_umoci"
printf '%-52s %10.3f %10.1f  (umoci / this; target >= 8)\n' "this tool: umoci unpack, cold index cache" "$t_ours_cold" "$(ratio "$t_umoci" "$t_ours_cold")"
printf '%-52s %10.3f %10s  (target <= 0.100 s)\n' "this tool: umoci unpack, warm index cache" "$t_ours_warm" ""
echo
echo "Reading every file (tar -cf - -C rootfs . | wc -c, $bytes bytes) and a metadata walk (find -printf):"
printf '%-30s %14s %14s %14s\n' "" "1st pass (cold)" "2nd pass" "find walk"
printf '%-30s %14.2f %14.2f %14.2f\n' "this mount" "$o1" "$o2" "$o3"
printf '%-30s %14.2f %14.2f %14.2f\n' "fuse-overlayfs" "$v1" "$v2" "$v3"
printf '%-30s %14.2f %14.2f %14.2f\n' "extracted directory" "$d1" "$d2" "$d3"
printf '%-30s %14.2f %14.2f %14.2f  (fuse-overlayfs / this; target >= 1)\n' "ratio" "$(ratio "$v1" "$o1")" "$(ratio "$v2" "$o2")" "$(ratio "$v3" "$o3")"
echo
printf '%-52s %10.3f\n' "runc run python3 -c 'import json, sqlite3, email', extracted" "$t_runc_dir"
printf '%-52s %10.3f %10.2f  (this / extracted; target <= 1.5) %s\n' "the same on this mount" "$t_runc_ours" "$(ratio "$t_runc_ours" "$t_runc_dir")" "$runc_ok"
printf '%-52s %10s MB  (target <= 150 MB)\n' "mount server resident memory after the reads" "$((rss_kb / 1024))"
