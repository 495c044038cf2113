#!/usr/bin/env bash
# Extract-mode benchmarks (issue 10): side by side with Debian's umoci 0.4.7,
#   - unpack: this tool's `unpack --extract` (index cache cold, and warm) against `umoci unpack`;
#   - repack after a one-file change: this tool's repack of its extracted bundle (stat stamps
#     spare it from hashing unchanged files) against Debian's umoci repack of its own bundle,
#     and this tool's repack of Debian umoci's bundle (no stamps: umoci's full comparison).
# Medians of RUNS runs (hyperfine).
#
# The image: the benchmark image of scripts/build-bench-image.sh if it has been built
# (bench-work/debian:bench), else a smaller one built here with Debian's umoci from files of
# this machine (/usr/bin, /usr/lib/python3.11, /usr/share/doc, /usr/share/perl; two layers).
#
#   scripts/bench-extract.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
command -v swift >/dev/null 2>&1 || export PATH="/opt/swift/usr/bin:$PATH"
command -v hyperfine >/dev/null 2>&1 || { echo "bench-extract.sh: hyperfine is not installed (apt-get install hyperfine)" >&2; exit 1; }
swift build -c release > /tmp/umoci-bench-extract-build.log 2>&1 || { cat /tmp/umoci-bench-extract-build.log; exit 1; }
ours="$(swift build -c release --show-bin-path)/umoci"
theirs=/usr/bin/umoci

if bash scripts/build-bench-image.sh --summary >/dev/null 2>&1; then
    layout=bench-work/debian
    image="the benchmark image (scripts/build-bench-image.sh)"
else
    layout=bench-work/extract-small
    image="a smaller image built from this machine's /usr/bin, /usr/lib/python3.11, /usr/share/doc, /usr/share/perl"
    if ! [ -f "$layout/index.json" ] || ! grep -q '"bench"' "$layout/index.json"; then
        rm -rf "$layout" "$layout.tmp"
        mkdir -p bench-work
        $theirs init --layout "$layout.tmp"
        $theirs new --image "$layout.tmp:bench"
        b=$(mktemp -d /tmp/umoci-bench-extract-build.XXXXXX)
        $theirs unpack --image "$layout.tmp:bench" "$b/bundle"
        mkdir -p "$b/bundle/rootfs/usr/lib" "$b/bundle/rootfs/usr/share" "$b/bundle/rootfs/etc"
        cp -a /usr/bin "$b/bundle/rootfs/usr/"
        cp -a /usr/lib/python3.11 "$b/bundle/rootfs/usr/lib/"
        echo "welcome" > "$b/bundle/rootfs/etc/motd"
        $theirs repack --refresh-bundle --image "$layout.tmp:bench" "$b/bundle"
        cp -a /usr/share/doc /usr/share/perl "$b/bundle/rootfs/usr/share/"
        $theirs repack --image "$layout.tmp:bench" "$b/bundle"
        rm -rf "$b"
        $theirs gc --layout "$layout.tmp"
        mv "$layout.tmp" "$layout"
    fi
fi

work=$(mktemp -d /tmp/umoci-bench-extract.XXXXXX)
trap 'rm -rf "$work"' EXIT
cp -a "$layout" "$work/L"   # repack adds layers: keep the shared layout as it is
L="$work/L"
files=$($ours raw unpack --cache-dir "$work/cache" --image "$L:bench" "$work/count" >/dev/null 2>&1 && find "$work/count" | wc -l)
size=$(du -sh "$work/count" | cut -f1)
rm -rf "$work/count"

median() {  # hyperfine JSON, command index -> median seconds
    python3 -c 'import json,sys; print("%.3f" % json.load(open(sys.argv[1]))["results"][int(sys.argv[2])]["median"])' "$1" "$2"
}

hyperfine --style none --runs "$runs" --export-json "$work/unpack.json" \
    --prepare "rm -rf $work/u $work/cache-cold" \
    -n "ours-cold" "$ours unpack --extract --cache-dir $work/cache-cold --image $L:bench $work/u" \
    -n "ours-warm" "$ours unpack --extract --cache-dir $work/cache --image $L:bench $work/u" \
    -n "umoci" "$theirs unpack --image $L:bench $work/u" >/dev/null

# The bundles to repack: ours (with stamps) and Debian umoci's (mtree only).
$ours unpack --extract --cache-dir "$work/cache" --image "$L:bench" "$work/ours"
$theirs unpack --image "$L:bench" "$work/theirs"
cp -a "$work/theirs" "$work/theirs-for-us"
change() { echo "echo change-\$(date +%s%N) > $1/rootfs/etc/motd"; }
hyperfine --style none --runs "$runs" --export-json "$work/repack.json" \
    --prepare "$(change "$work/ours"); $(change "$work/theirs"); $(change "$work/theirs-for-us")" \
    -n "ours" "$ours repack --image $L:r-ours $work/ours" \
    -n "umoci" "$theirs repack --image $L:r-umoci $work/theirs" \
    -n "ours-of-umoci-bundle" "$ours repack --image $L:r-ours-full $work/theirs-for-us" >/dev/null

uc=$(median "$work/unpack.json" 0); uw=$(median "$work/unpack.json" 1); uu=$(median "$work/unpack.json" 2)
ro=$(median "$work/repack.json" 0); ru=$(median "$work/repack.json" 1); rf=$(median "$work/repack.json" 2)
ratio() { python3 -c "import sys; print('%.2f' % (float(sys.argv[1]) / float(sys.argv[2])))" "$1" "$2"; }

echo "Extract-mode benchmarks, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, median of $runs runs"
echo "image: $image, $files paths, $size extracted"
echo
echo "| measurement | seconds | vs Debian umoci |"
echo "|---|---|---|"
echo "| Debian \`umoci unpack\` | $uu | |"
echo "| this tool's \`unpack --extract\`, index cache cold | $uc | $(ratio "$uu" "$uc") x faster |"
echo "| this tool's \`unpack --extract\`, index cache warm | $uw | $(ratio "$uu" "$uw") x faster |"
echo "| Debian \`umoci repack\` of its bundle, one file changed | $ru | |"
echo "| this tool's \`repack\` of its extracted bundle, one file changed | $ro | $(ratio "$ru" "$ro") x faster |"
echo "| this tool's \`repack\` of Debian umoci's bundle (no stamps: every file hashed) | $rf | $(ratio "$ru" "$rf") x faster |"
