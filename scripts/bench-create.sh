#!/usr/bin/env bash
# Creating many small files through the mount (issue 13, target 4, second half): `tar -xf` of a
# tarball of about 6,000 files (this machine's /usr/share/doc, /usr/share/perl and
# /usr/share/i18n) into a new directory made inside this tool's mount, against the same into
# fuse-overlayfs and kernel overlayfs over the image's tree extracted. The image is the `many`
# fixture (the lower side hardly matters: everything lands in a new directory).
#
# Each run gets a fresh ext4 file system (a loop device) for the side that is written (the
# bundle with its upper directory, or overlayfs's upperdir and workdir): ext4 allocating inodes
# where thousands were just deleted scans for them (`recently_deleted`), which made the same
# untar vary from 8 s to 60 s on the shared disk. The tarball is read from the page cache; the
# three peers take turns within each run. Medians of RUNS runs; `uptime` load at the start and
# the end; this tool's request counts per file from its last run (UMOCI_FUSE_COUNTS).
#
# With BASELINE_BIN set (the release directory of another build of this tool, e.g. of an earlier
# commit), that build's mount takes its turn in the same runs as well.
#
#   [BASELINE_BIN=DIR] scripts/bench-create.sh [RUNS]
set -euo pipefail
runs=${1:-3}
source "$(dirname "$0")/lib/bench.sh"
bench_setup create

python3 scripts/fixtures/make_image.py "$work/L" many >/dev/null
"$bin/umoci" raw unpack --cache-dir "$work/cache" --image "$work/L:many" "$work/lower" >/dev/null
tar -C / -cf "$work/files.tar" usr/share/doc usr/share/perl usr/share/i18n 2>/dev/null || true
files=$(tar -tf "$work/files.tar" | grep -vc '/$')
bytes=$(stat -c %s "$work/files.tar")
cat "$work/files.tar" > /dev/null
load_start=$(cut -d' ' -f1-3 /proc/loadavg)

# fresh_fs DIR: a new, empty ext4 file system mounted at DIR.
fresh_fs() {
    mkdir -p "$1"
    rm -f "$1.img"; truncate -s 4G "$1.img"
    mkfs.ext4 -q -F "$1.img"
    mount -o loop "$1.img" "$1"
}
drop_fs() {  # (a server that was just told to unmount may still hold the upper directory)
    for _ in $(seq 100); do umount "$1" 2>/dev/null && break; sleep 0.1; done
    rm -f "$1.img"; rmdir "$1"
}
untar_into() { mkdir "$1"; sync; seconds tar -xf "$work/files.tar" -C "$1"; }

n=0
ours() {  # [RELEASE_DIR]
    n=$((n + 1)); local fs="$work/fs$n" u=${1:-$bin}
    fresh_fs "$fs"
    rm -f "$work/counts"
    UMOCI_FUSE_COUNTS="$work/counts" "$u/umoci" unpack --cache-dir "$work/cache${1:+0}" --image "$work/L:many" "$fs/b" >/dev/null
    local pid c0 t
    pid=$(cat "$fs/b/umoci-mount.pid"); c0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    t=$(untar_into "$fs/b/rootfs/new")
    # The server's CPU time (user + system) for the untar, a figure the load moves less.
    printf '%.2f\n' "$(echo "($(awk '{print $14 + $15}' "/proc/$pid/stat") - $c0) / $(getconf CLK_TCK)" | bc -l)" >> "$work/cpu${1:+0}"
    echo "$t"
    "$u/umoci" umount "$fs/b" >/dev/null
    [ -n "${1:-}" ] && { drop_fs "$fs"; return; }
    for _ in $(seq 50); do [ -s "$work/counts" ] && break; sleep 0.1; done
    cp "$work/counts" "$work/counts.last" 2>/dev/null || true
    drop_fs "$fs"
}
overlay() {  # fuse-overlayfs | overlay
    n=$((n + 1)); local fs="$work/fs$n"
    fresh_fs "$fs"
    mkdir -p "$fs/u" "$fs/w" "$fs/m"
    if [ "$1" = overlay ]; then
        mount -t overlay overlay -o "lowerdir=$work/lower,upperdir=$fs/u,workdir=$fs/w" "$fs/m"
    else
        fuse-overlayfs -o "lowerdir=$work/lower,upperdir=$fs/u,workdir=$fs/w" "$fs/m" 2>/dev/null
    fi
    untar_into "$fs/m/new"
    umount "$fs/m"
    drop_fs "$fs"
}
declare -a a=() b=() c=() z=()
for _ in $(seq "$runs"); do
    [ -n "${BASELINE_BIN:-}" ] && z+=("$(ours "$BASELINE_BIN")")
    a+=("$(ours)")
    b+=("$(overlay fuse-overlayfs)")
    c+=("$(overlay overlay)")
done
ours=$(printf '%s\n' "${a[@]}" | median)
fuse=$(printf '%s\n' "${b[@]}" | median)
kernel=$(printf '%s\n' "${c[@]}" | median)

printf 'tar -xf of %s files (%s MB) into a new directory, median of %s; load %s -> %s\n' \
    "$files" "$((bytes / 1000000))" "$runs" "$load_start" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-48s %9s %8s   %s\n' "" "seconds" "ours /" "runs"
printf '%-48s %8.3fs %8s   %s\n' "this tool's mount" "$ours" "" "${a[*]}"
printf '%-48s %8.3fs %8s   %s\n' "  its server's CPU time" "$(median < "$work/cpu")" "" "$(tr '\n' ' ' < "$work/cpu")"
printf '%-48s %8.3fs %7.2fx   %s\n' "fuse-overlayfs over the extracted tree" "$fuse" "$(echo "$ours / $fuse" | bc -l)" "${b[*]}"
printf '%-48s %8.3fs %7.2fx   %s\n' "kernel overlayfs over the extracted tree" "$kernel" "$(echo "$ours / $kernel" | bc -l)" "${c[*]}"
if [ -n "${BASELINE_BIN:-}" ]; then
    base=$(printf '%s\n' "${z[@]}" | median)
    printf '%-48s %8.3fs %7.2fx   %s\n' "the mount of BASELINE_BIN" "$base" "$(echo "$ours / $base" | bc -l)" "${z[*]}"
    printf '%-48s %8.3fs %8s   %s\n' "  its server's CPU time" "$(median < "$work/cpu0")" "" "$(tr '\n' ' ' < "$work/cpu0")"
fi
if [ -s "$work/counts.last" ]; then
    echo "requests this tool's server served in its last run, per file created:"
    cut -d' ' -f2- "$work/counts.last" | tr ' ' '\n' | awk -F= -v f="$files" '$2 >= f / 20 {printf "  %-12s %8d  %5.2f\n", $1, $2, $2 / f}'
fi
