#!/usr/bin/env bash
# Builds the benchmark image: a real multi-layer Debian 12 (bookworm) image, written as an OCI
# layout with the tag "bench". Built with Debian's own tools only: debootstrap for the base and
# Debian's umoci (/usr/bin/umoci, 0.4.7) for the layers (unpack -> change rootfs -> repack, so the
# deltas and whiteouts are umoci's own).
#
#   scripts/build-bench-image.sh            -> $BENCH_DIR/debian:bench
#   scripts/build-bench-image.sh --double   -> $BENCH_DIR/debian-double:bench (about 2x the size)
#
# Options:
#   --double    build the "twice as large" variant (more packages, a second data layer)
#   --force     rebuild even if the layout already holds the tag
#   --summary   only print the summary of an existing layout (exit 1 if there is none)
#   --no-cache  ignore (and refresh) the cached debootstrap tarball and .deb files
#
# Environment:
#   BENCH_DIR     where layouts and caches live (default: <repo>/bench-work, gitignored)
#   BENCH_MIRROR  Debian mirror (default: http://deb.debian.org/debian)
#   UMOCI         the reference umoci to build with (default: /usr/bin/umoci)
#
# Layers of debian:bench (umoci history "created_by" names them):
#   1 minbase    debootstrap --variant=minbase bookworm
#   2 packages   apt-get install python3, sqlite3, perl, build-essential, git, ... (+ apt lists)
#   3 deletions  removes docs, man pages, locales, apt lists and a few files (whiteouts), replaces
#                a directory, turns a directory into a file, a file into a directory, a file into
#                a symlink
#   4 data       /opt/bench/big.bin (48 MiB of mixed compressible content) and a few thousand
#                small files, symlinks and hard links under /opt/bench/small
#   5 config     edits and mode-only changes of a few files under /etc
# plus an image config with Cmd/Env/WorkingDir/labels. --double adds a layer of extra packages
# after "packages" and a second data layer (another 48 MiB file and more small files).
#
# Idempotent: if the layout already has the tag, it prints the summary and exits. Needs root
# (debootstrap, chroot, mounts); mounts are only made inside a temporary build directory and are
# always removed, also on failure or interruption.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
BENCH_DIR="${BENCH_DIR:-$repo/bench-work}"
BENCH_MIRROR="${BENCH_MIRROR:-http://deb.debian.org/debian}"
UMOCI="${UMOCI:-/usr/bin/umoci}"
SUITE=bookworm
TAG=bench

double=0 force=0 summary_only=0 no_cache=0
for arg in "$@"; do
    case "$arg" in
        --double) double=1 ;;
        --force) force=1 ;;
        --summary) summary_only=1 ;;
        --no-cache) no_cache=1 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "build-bench-image: unknown argument: $arg (see --help)" >&2; exit 2 ;;
    esac
done

name=debian
[ "$double" -eq 1 ] && name=debian-double
layout="$BENCH_DIR/$name"
cache="$BENCH_DIR/cache"
summary_file="$BENCH_DIR/$name.summary"

# fd 7 is the original stderr, so messages from traps also show while a command's output is
# redirected to a log file.
exec 7>&2
log() { printf '[build-bench-image %s] %s\n' "$(date +%H:%M:%S)" "$*" >&7; }
die() { log "error: $*"; exit 1; }

# --- tools ----------------------------------------------------------------------------------
ensure_tools() {
    local missing=() pair cmd pkg
    for pair in debootstrap:debootstrap jq:jq openssl:openssl flock:util-linux \
                mountpoint:util-linux numfmt:coreutils gzip:gzip tar:tar awk:mawk; do
        cmd=${pair%%:*} pkg=${pair#*:}
        command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
    done
    [ -x "$UMOCI" ] || { [ "$UMOCI" = /usr/bin/umoci ] && missing+=(umoci); }
    if [ ${#missing[@]} -gt 0 ]; then
        [ "$(id -u)" -eq 0 ] || die "missing tools (${missing[*]}) and not root to install them"
        log "installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >/dev/null
    fi
    [ -x "$UMOCI" ] || die "no umoci at $UMOCI"
}

# --- summary --------------------------------------------------------------------------------
has_tag() {
    [ -f "$1/index.json" ] && jq -e --arg t "$TAG" \
        'any(.manifests[]?; .annotations["org.opencontainers.image.ref.name"] == $t)' \
        "$1/index.json" >/dev/null 2>&1
}

manifest_digest() {
    jq -r --arg t "$TAG" '[.manifests[] |
        select(.annotations["org.opencontainers.image.ref.name"] == $t)][0].digest' "$1/index.json"
}

blob() { printf '%s/blobs/%s/%s' "$1" "${2%%:*}" "${2#*:}"; }

# Prints the summary of layout $1 (tag $TAG). Layer figures come from the blobs themselves:
# uncompressed = size of the decompressed tar stream, files = entries listed by tar -t.
compute_summary() {
    local dir=$1 mdigest mblob cdigest cblob n i digest size usize files wh created
    local tot_c=0 tot_u=0 tot_f=0 tot_w=0
    mdigest=$(manifest_digest "$dir")
    mblob=$(blob "$dir" "$mdigest")
    cdigest=$(jq -r .config.digest "$mblob")
    cblob=$(blob "$dir" "$cdigest")
    n=$(jq '.layers | length' "$mblob")
    printf 'layout    %s (tag %s)\n' "$dir" "$TAG"
    printf 'manifest  %s\n' "$mdigest"
    printf 'layers    %s\n' "$n"
    printf '%-3s %-15s %10s %14s %10s %14s %8s %9s\n' '#' layer compressed '' uncompressed '' files whiteouts
    # Non-empty history entries line up with the layers.
    mapfile -t names < <(jq -r '[.history[]? | select(.empty_layer != true)
        | (.created_by // "" | split(":")[0])] | .[]' "$cblob")
    for ((i = 0; i < n; i++)); do
        digest=$(jq -r ".layers[$i].digest" "$mblob")
        size=$(jq -r ".layers[$i].size" "$mblob")
        usize=$(gzip -dc "$(blob "$dir" "$digest")" | wc -c)
        read -r files wh < <(gzip -dc "$(blob "$dir" "$digest")" | tar -tf - |
            awk '{ n++ } /(^|\/)\.wh\./ { w++ } END { print n + 0, w + 0 }')
        created=${names[i]:-?}
        printf '%-3s %-15s %10s %14s %10s %14s %8s %9s\n' "$((i + 1))" "$created" \
            "$(numfmt --to=iec-i --suffix=B "$size")" "($size)" \
            "$(numfmt --to=iec-i --suffix=B "$usize")" "($usize)" "$files" "$wh"
        tot_c=$((tot_c + size)) tot_u=$((tot_u + usize))
        tot_f=$((tot_f + files)) tot_w=$((tot_w + wh))
    done
    printf '%-19s %10s %14s %10s %14s %8s %9s\n' total \
        "$(numfmt --to=iec-i --suffix=B "$tot_c")" "($tot_c)" \
        "$(numfmt --to=iec-i --suffix=B "$tot_u")" "($tot_u)" "$tot_f" "$tot_w"
}

# Prints the cached summary if it belongs to the current manifest, else computes and caches it.
print_summary() {
    local dir=$1 mdigest
    mdigest=$(manifest_digest "$dir")
    if [ -f "$summary_file" ] && [ "$(head -n 1 "$summary_file")" = "# $mdigest" ]; then
        tail -n +2 "$summary_file"
        return
    fi
    local text
    text=$(compute_summary "$dir")
    # Facts only known at build time (final rootfs, build time) are kept from the build log.
    if [ -f "$summary_file.build" ] && [ "$(head -n 1 "$summary_file.build")" = "# $mdigest" ]; then
        text+=$'\n'$(tail -n +2 "$summary_file.build")
    fi
    { echo "# $mdigest"; echo "$text"; } >"$summary_file.tmp" && mv "$summary_file.tmp" "$summary_file"
    echo "$text"
}

# --- fast paths -----------------------------------------------------------------------------
if [ "$summary_only" -eq 1 ]; then
    command -v jq >/dev/null 2>&1 || ensure_tools
    has_tag "$layout" || die "no image at $layout:$TAG (build it without --summary)"
    print_summary "$layout"
    exit 0
fi
if [ "$force" -eq 0 ] && command -v jq >/dev/null 2>&1 && has_tag "$layout"; then
    print_summary "$layout"
    exit 0
fi

[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap, chroot and mounts)"
ensure_tools
mkdir -p "$BENCH_DIR" "$cache"

# One build at a time (the caches are shared); a second caller waits, then finds the image.
exec 9>"$BENCH_DIR/.build.lock"
if ! flock -n 9; then
    log "waiting for another build in $BENCH_DIR to finish"
    flock 9
fi
if [ "$force" -eq 0 ] && has_tag "$layout"; then
    print_summary "$layout"
    exit 0
fi
# Holding the lock, any build directory left over is from a killed build: remove it unless
# something is still mounted below it.
for stale in "$BENCH_DIR"/.build-*; do
    [ -d "$stale" ] || continue
    if [ -n "$(awk -v p="$stale/" 'index($2, p) == 1' /proc/self/mounts)" ]; then
        log "warning: $stale has mounts below it; leaving it alone"
    else
        log "removing leftover $stale"
        rm -rf --one-file-system "$stale"
    fi
done

# --- build directory, mounts and cleanup ----------------------------------------------------
work=$(mktemp -d "$BENCH_DIR/.build-$name.XXXXXX")
mounts=()

mounts_under() { # mount points below $1, deepest first
    awk -v p="$1/" 'index($2, p) == 1 { print $2 }' /proc/self/mounts | sort -r
}

unmount_all() {
    local i m
    for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
        m=${mounts[i]}
        if mountpoint -q "$m"; then umount "$m" 2>/dev/null || umount -l "$m"; fi
    done
    mounts=()
    # Anything else that ended up below the build directory (nothing should).
    for m in $(mounts_under "$work"); do umount "$m" 2>/dev/null || umount -l "$m"; done
}

cleanup() {
    local status=$?
    set +e
    unmount_all
    if [ -n "$(mounts_under "$work")" ]; then
        log "error: mounts left under $work, not deleting it: $(mounts_under "$work" | tr '\n' ' ')"
    else
        rm -rf --one-file-system "$work"
    fi
    [ "$status" -eq 0 ] || log "failed (status $status); nothing was written to $layout"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

bundle="$work/bundle"
rootfs="$bundle/rootfs"
newlayout="$work/layout"

# Runs a command in the rootfs with /proc, a minimal /dev (tmpfs with the usual nodes, never the
# host's /dev) and the shared .deb cache mounted; they are unmounted again before returning.
chroot_begin() {
    mount -t proc proc "$rootfs/proc"; mounts+=("$rootfs/proc")
    mount -t tmpfs -o mode=0755,size=4m tmpfs "$rootfs/dev"; mounts+=("$rootfs/dev")
    mknod -m 0666 "$rootfs/dev/null" c 1 3
    mknod -m 0666 "$rootfs/dev/zero" c 1 5
    mknod -m 0666 "$rootfs/dev/full" c 1 7
    mknod -m 0666 "$rootfs/dev/random" c 1 8
    mknod -m 0666 "$rootfs/dev/urandom" c 1 9
    mknod -m 0666 "$rootfs/dev/tty" c 5 0
    ln -s /proc/self/fd "$rootfs/dev/fd"
    ln -s /proc/self/fd/0 "$rootfs/dev/stdin"
    ln -s /proc/self/fd/1 "$rootfs/dev/stdout"
    ln -s /proc/self/fd/2 "$rootfs/dev/stderr"
    mkdir -p "$rootfs/dev/pts" "$rootfs/dev/shm"
    mkdir -p "$cache/debs/partial"
    mount --bind "$cache/debs" "$rootfs/var/cache/apt/archives"
    mounts+=("$rootfs/var/cache/apt/archives")
    # Name resolution for apt, no service starts, and fast (unsafe) dpkg I/O - all removed again.
    rm -f "$rootfs/etc/resolv.conf"
    cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
    printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
    chmod 0755 "$rootfs/usr/sbin/policy-rc.d"
    echo force-unsafe-io >"$rootfs/etc/dpkg/dpkg.cfg.d/bench-unsafe-io"
}

chroot_end() {
    rm -f "$rootfs/usr/sbin/policy-rc.d" "$rootfs/etc/dpkg/dpkg.cfg.d/bench-unsafe-io" \
          "$rootfs/etc/resolv.conf"
    unmount_all
}

in_chroot() {
    chroot "$rootfs" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"
}

apt_run() { # output goes to a log; its summary lines are shown, all of it on failure
    in_chroot apt-get -q -o Dpkg::Use-Pty=0 "$@" >"$work/apt.log" 2>&1 ||
        { tail -n 40 "$work/apt.log" >&2; die "apt-get $1 failed"; }
    grep -E '^(Fetched|Need to get|After this operation|[0-9]+ upgraded)' "$work/apt.log" >&2 || true
}
apt_install() { apt_run install -y --no-install-recommends "$@"; }

layer_no=0
layer_start=$SECONDS
repack() { # repack <name> <description>
    local lname=$1 desc=$2
    [ -z "$(mounts_under "$rootfs")" ] || die "refusing to repack with mounts under the rootfs"
    layer_no=$((layer_no + 1))
    "$UMOCI" repack --refresh-bundle --image "$newlayout:$TAG" \
        --history.created_by "$lname: $desc" --history.comment "benchmark layer $layer_no" \
        --history.author "build-bench-image.sh" "$bundle"
    log "layer $layer_no ($lname) done in $((SECONDS - layer_start))s"
    layer_start=$SECONDS
}

# Deterministic content: AES-CTR keystream of the given seed, so rebuilds give the same bytes.
keystream() { # keystream <bytes> <seed>
    head -c "$1" /dev/zero |
        openssl enc -aes-128-ctr -nosalt -K 000102030405060708090a0b0c0d0e0f \
            -iv "$(printf '%032x' "$2")" 2>/dev/null
}

# <out> <MiB> <seed>: 1 MiB chunks cycling through incompressible bytes, base64 text,
# repetitive numbered text and zeros (gzip shrinks the whole to roughly 45%).
make_big_file() {
    local out=$1 mib=$2 seed=$3 i
    for ((i = 0; i < mib; i++)); do
        case $((i % 4)) in
            0) keystream 1048576 $((seed * 4096 + i)) ;;
            1) { keystream 786432 $((seed * 4096 + i)) | base64 -w 76 || true; } |
                   head -c 1048576 ;;
            2) { seq -f "record %09g of the umoci benchmark payload: lorem ipsum dolor sit amet" \
                     $((i * 20000)) $((i * 20000 + 20000)) || true; } | head -c 1048576 ;;
            3) head -c 1048576 /dev/zero ;;
        esac
    done >"$out"
}

# <dir> <count> <seed>: small text files of 64 B - 16 KiB spread over 100-file directories, plus
# some symlinks and hard links.
make_small_files() {
    local dir=$1 count=$2 seed=$3
    mkdir -p "$dir"
    (cd "$dir" && awk -v count="$count" -v seed="$seed" 'BEGIN {
        srand(seed)
        for (i = 0; i < count; i++) {
            d = sprintf("d%03d", int(i / 100))
            if (i % 100 == 0) system("mkdir -p " d)
            f = sprintf("%s/f%05d.txt", d, i)
            size = int(64 * 2 ^ (rand() * 8))
            line = sprintf("file %d of seed %d; ", i, seed)
            s = ""
            while (length(s) < size) s = s line int(rand() * 1e9) "\n"
            printf "%s", substr(s, 1, size) > f
            close(f)
        }
    }')
    local d files
    for d in "$dir"/d*; do
        files=("$d"/f*.txt)
        ln -s "$(basename "${files[0]}")" "$d/first-link"
        ln "${files[-1]}" "$d/last-hardlink"
    done
}

# --- the layers -----------------------------------------------------------------------------
base_packages=(
    python3 python3-venv python3-pip python3-dev sqlite3 libsqlite3-dev perl
    build-essential git curl wget ca-certificates vim less gnupg openssh-client procps
    iproute2 xz-utils bzip2 zstd file unzip
)
extra_packages=(
    golang-go openjdk-17-jdk-headless
)

build_start=$SECONDS
log "building $layout:$TAG in $work"

# The debootstrap result is cached as a tarball (minus /dev nodes, apt lists and .debs).
minbase_tar="$cache/minbase-$SUITE-$(dpkg --print-architecture).tar"
if [ "$no_cache" -eq 1 ]; then rm -rf "$minbase_tar" "$cache/debs"; fi
if [ ! -f "$minbase_tar" ]; then
    log "debootstrap --variant=minbase $SUITE (cached afterwards in $minbase_tar)"
    dbs="$work/debootstrap"
    debootstrap --variant=minbase "$SUITE" "$dbs" "$BENCH_MIRROR" >"$work/debootstrap.log" 2>&1 ||
        { tail -n 30 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
    for m in $(mounts_under "$dbs"); do umount "$m" 2>/dev/null || umount -l "$m"; done
    # An image-like tree: empty /dev, no host resolv.conf/hostname, no apt lists or .debs.
    find "$dbs/dev" -mindepth 1 -delete
    rm -rf "$dbs/var/cache/apt/archives/"*.deb "$dbs/var/lib/apt/lists/"* "$dbs/etc/resolv.conf"
    mkdir -p "$dbs/var/lib/apt/lists/partial"
    echo bench >"$dbs/etc/hostname"
    printf 'deb %s %s main\ndeb %s %s-updates main\n' "$BENCH_MIRROR" "$SUITE" \
        "$BENCH_MIRROR" "$SUITE" >"$dbs/etc/apt/sources.list"
    tar --numeric-owner --xattrs --xattrs-include='*' -C "$dbs" -cpf "$minbase_tar.tmp" .
    mv "$minbase_tar.tmp" "$minbase_tar"
    rm -rf --one-file-system "$dbs"
else
    log "using cached $minbase_tar"
fi

"$UMOCI" init --layout "$newlayout"
"$UMOCI" new --image "$newlayout:$TAG"
"$UMOCI" unpack --image "$newlayout:$TAG" "$bundle" >/dev/null
layer_start=$SECONDS

# 1: minbase
tar --numeric-owner --xattrs --xattrs-include='*' -C "$rootfs" -xpf "$minbase_tar"
repack minbase "debootstrap --variant=minbase $SUITE"

# 2: packages (plus a few fixtures that later layers delete or replace)
chroot_begin
apt_run update
apt_install "${base_packages[@]}"
chroot_end
rm -f "$rootfs"/var/cache/apt/*.bin  # what apt-get clean would remove (the .debs are elsewhere)
fx="$rootfs/opt/fixtures"
mkdir -p "$fx/dir-to-file" "$fx/replaced-dir/sub" "$fx/kept"
for i in 1 2 3; do
    echo "entry $i" >"$fx/dir-to-file/f$i"
    echo "old $i" >"$fx/replaced-dir/f$i"
    echo "old sub $i" >"$fx/replaced-dir/sub/s$i"
done
echo "a file that becomes a directory" >"$fx/file-to-dir"
echo "a file that becomes a symlink" >"$fx/file-to-symlink"
echo "kept" >"$fx/kept/k"
repack packages "apt-get install ${base_packages[*]}"

if [ "$double" -eq 1 ]; then
    chroot_begin
    apt_install "${extra_packages[@]}"
    chroot_end
    rm -f "$rootfs"/var/cache/apt/*.bin
    repack packages-extra "apt-get install ${extra_packages[*]}"
fi

# 3: deletions (whiteouts), a replaced directory and type changes
rm -rf "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
       "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/debconf/*-old \
       "$rootfs"/var/log/apt/eipp.log.xz
find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name 'locale.alias' \
     ! -name 'en*' ! -name 'C*' -exec rm -rf {} +
mkdir -p "$rootfs/var/lib/apt/lists/partial"
rm -f "$rootfs/usr/bin/perlbug" "$rootfs/usr/bin/perlthanks" "$rootfs/usr/bin/lzcat" \
      "$rootfs/etc/cron.daily/apt-compat"
rm -rf "$fx/replaced-dir"
mkdir -p "$fx/replaced-dir/new-sub"
echo "new" >"$fx/replaced-dir/f1"
echo "new sub" >"$fx/replaced-dir/new-sub/n1"
rm -rf "$fx/dir-to-file"
echo "was a directory" >"$fx/dir-to-file"
rm -f "$fx/file-to-dir"
mkdir "$fx/file-to-dir"
echo "inside" >"$fx/file-to-dir/inside"
rm -f "$fx/file-to-symlink"
ln -s kept/k "$fx/file-to-symlink"
repack deletions "rm -rf /usr/share/{doc,man,info,locale/*} /var/lib/apt/lists/* and more"

# 4: data - a big file and a few thousand small files
mkdir -p "$rootfs/opt/bench"
make_big_file "$rootfs/opt/bench/big.bin" 48 1
make_small_files "$rootfs/opt/bench/small" 4000 1
repack data "add /opt/bench/big.bin (48 MiB) and 4000 small files"

if [ "$double" -eq 1 ]; then
    make_big_file "$rootfs/opt/bench/big-2.bin" 48 2
    make_small_files "$rootfs/opt/bench/small-2" 4000 2
    repack data-2 "add /opt/bench/big-2.bin (48 MiB) and 4000 more small files"
fi

# 5: config - content edits, a mode-only change, a new symlink
cat >>"$rootfs/etc/bash.bashrc" <<'EOF'

# umoci benchmark image
export BENCH_IMAGE=1
EOF
echo "umoci benchmark image ($name)" >"$rootfs/etc/motd"
printf 'BENCH_IMAGE=1\n' >>"$rootfs/etc/environment"
chmod 0640 "$rootfs/etc/issue.net"
ln -s /opt/bench/big.bin "$rootfs/usr/local/bin/bench-big"
touch -d '2020-01-01 00:00:00' "$rootfs/etc/issue"
repack config "edit /etc/bash.bashrc /etc/motd /etc/environment, chmod /etc/issue.net"

"$UMOCI" config --image "$newlayout:$TAG" \
    --author "umoci-swift benchmarks" \
    --config.cmd /bin/bash \
    --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --config.env LANG=C.UTF-8 --config.env BENCH_IMAGE=1 \
    --config.workingdir / \
    --config.label org.opencontainers.image.title="umoci benchmark image ($name)" \
    --config.label org.opencontainers.image.base.name="debian:$SUITE" \
    --history.created_by "umoci config --config.cmd /bin/bash --config.env ..."

# Sanity check on the final rootfs: what the benchmarks run in a container must work here.
chroot_begin
in_chroot python3 -c 'import json, sqlite3, email' || die "python3 check failed"
chroot_end
rootfs_files=$(find "$rootfs" -xdev -mindepth 1 | wc -l)
rootfs_bytes=$(du -sb --apparent-size "$rootfs" | cut -f1)

"$UMOCI" gc --layout "$newlayout"
has_tag "$newlayout" || die "the new layout has no tag $TAG"

# Swap the finished layout into place.
rm -rf --one-file-system "$layout.old"
[ -e "$layout" ] && mv "$layout" "$layout.old"
mv "$newlayout" "$layout"
rm -rf --one-file-system "$layout.old"

build_time=$((SECONDS - build_start))
{
    echo "# $(manifest_digest "$layout")"
    printf 'final rootfs  %s entries, %s (%s bytes)\n' "$rootfs_files" \
        "$(numfmt --to=iec-i --suffix=B "$rootfs_bytes")" "$rootfs_bytes"
    printf 'built         %s in %ss\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$build_time"
} >"$summary_file.build"
rm -f "$summary_file"
log "built $layout:$TAG in ${build_time}s"
print_summary "$layout"
