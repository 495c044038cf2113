#!/usr/bin/env bash
# Repack benchmarks (issue: repack turns only the upper directory into the layer): after
# changing one small file, this tool's repack of its mounted bundle against Debian's umoci
# repack of its extracted bundle in the same state; and the same one-file change on the image
# twice as large; and repack --refresh-bundle of the mounted bundle (the server rebases onto the
# new image: the time of the whole command and how long the mount's namespace operations
# waited), against Debian's umoci repack --refresh-bundle. Medians of RUNS runs.
#
#   scripts/bench-repack.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
bash scripts/setup.sh >/dev/null
command -v swift >/dev/null 2>&1 || export PATH="/opt/swift/usr/bin:$PATH"
bash scripts/build-bench-image.sh >/dev/null
bash scripts/build-bench-image.sh --double >/dev/null
swift build -c release > /tmp/umoci-bench-build.log 2>&1 || { cat /tmp/umoci-bench-build.log; exit 1; }
bin=$(swift build -c release --show-bin-path)
work=$(mktemp -d /tmp/umoci-bench-repack.XXXXXX)
cleanup() {
    for m in $(awk -v w="$work" 'index($2, w) == 1 {print $2}' /proc/mounts | sort -r); do umount -l "$m" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
seconds() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null 2>&1; t1=$(date +%s.%N); echo "$t1 - $t0" | bc -l; }

change=0
ours_repack() {  # layout bundle
    change=$((change + 1))
    echo "change $change" > "$2/rootfs/etc/motd"
    seconds "$bin/umoci" repack --image "$1:repack-ours" "$2"
}
umoci_repack() {
    change=$((change + 1))
    echo "change $change" > "$2/rootfs/etc/motd"
    seconds /usr/bin/umoci repack --image "$1:repack-umoci" "$2"
}
# --refresh-bundle: prints "seconds pause_seconds" (the pause from the server's reply).
ours_refresh() {
    local t0 t1 out
    change=$((change + 1))
    echo "change $change" > "$2/rootfs/etc/motd"
    t0=$(date +%s.%N)
    out=$("$bin/umoci" --log info repack --image "$1:refresh-ours" --refresh-bundle "$2" 2>&1)
    t1=$(date +%s.%N)
    local pause; pause=$(sed -n 's/.*pause_ms=\([0-9]*\).*/\1/p' <<<"$out")
    [ -n "$pause" ] || { echo "no rebase reply: $out" >&2; exit 1; }
    echo "$(echo "$t1 - $t0" | bc -l) $(echo "$pause / 1000" | bc -l)"
}
umoci_refresh() {
    change=$((change + 1))
    echo "change $change" > "$2/rootfs/etc/motd"
    seconds /usr/bin/umoci repack --image "$1:refresh-umoci" --refresh-bundle "$2"
}

declare -A result
for variant in debian debian-double; do
    layout=bench-work/$variant
    "$bin/umoci" unpack --cache-dir "$work/cache" --image "$layout:bench" "$work/ours-$variant"
    xs=(); for _ in $(seq "$runs"); do xs+=("$(ours_repack "$layout" "$work/ours-$variant")"); done
    result[ours-$variant]=$(printf '%s\n' "${xs[@]}" | median)
    if [ "$variant" = debian ]; then
        ts=(); ps=(); for _ in $(seq "$runs"); do read -r t p < <(ours_refresh "$layout" "$work/ours-$variant"); ts+=("$t"); ps+=("$p"); done
        result[ours-refresh]=$(printf '%s\n' "${ts[@]}" | median)
        result[ours-pause]=$(printf '%s\n' "${ps[@]}" | median)
    fi
    "$bin/umoci" umount "$work/ours-$variant"
    if [ "$variant" = debian ]; then
        /usr/bin/umoci unpack --image "$layout:bench" "$work/theirs-$variant" >/dev/null
        xs=(); for _ in $(seq "$runs"); do xs+=("$(umoci_repack "$layout" "$work/theirs-$variant")"); done
        result[umoci-$variant]=$(printf '%s\n' "${xs[@]}" | median)
        xs=(); for _ in $(seq "$runs"); do xs+=("$(umoci_refresh "$layout" "$work/theirs-$variant")"); done
        result[umoci-refresh]=$(printf '%s\n' "${xs[@]}" | median)
        rm -rf "$work/theirs-$variant"
    fi
done

echo "Repack benchmarks, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, median of $runs runs, one small file changed"
printf '%-55s %10s %10s\n' "measurement" "seconds" "ratio"
printf '%-55s %10.3f\n' "Debian umoci repack, debian image (809 MiB)" "${result[umoci-debian]}"
printf '%-55s %10.3f %10.1f  (umoci / this; target >= 20)\n' "this tool: umoci repack, debian image" "${result[ours-debian]}" "$(echo "${result[umoci-debian]} / ${result[ours-debian]}" | bc -l)"
printf '%-55s %10.3f %10.2f  (vs the debian image; target: nearly 1)\n' "this tool: umoci repack, debian-double image (1.6 GiB)" "${result[ours-debian-double]}" "$(echo "${result[ours-debian-double]} / ${result[ours-debian]}" | bc -l)"
printf '%-55s %10.3f\n' "Debian umoci repack --refresh-bundle, debian image" "${result[umoci-refresh]}"
printf '%-55s %10.3f %10.1f  (umoci / this)\n' "this tool: repack --refresh-bundle, mounted, debian image" "${result[ours-refresh]}" "$(echo "${result[umoci-refresh]} / ${result[ours-refresh]}" | bc -l)"
printf '%-55s %10.3f\n' "  of which the mount's namespace operations waited" "${result[ours-pause]}"
