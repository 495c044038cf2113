#!/usr/bin/env bash
# LXC's OCI template (issue 13, target 3, second half): `lxc-create -t oci` of a Debian minbase
# image with this tool's release `umoci` first on PATH against Debian's /usr/bin/umoci, then
# `lxc-destroy` (not timed). The template (/usr/share/lxc/templates/lxc-oci, unmodified) copies
# the image with skopeo, runs `umoci unpack`, moves every top-level entry of the bundle's rootfs
# out with mv (across file systems: a copy through the mount, then rm -rf through it) and
# deletes the bundle, so with this tool it measures unpack + copy-out + removal.
#
# The image: layer 1 (debootstrap --variant=minbase bookworm) of the benchmark image that
# scripts/build-bench-image.sh builds (BENCH_IMAGE, default /work/main/bench-work/debian:bench,
# only read), as an image of its own in the work directory; without it, the `many` fixture
# plus its 8 x 48 MB gzip layer (bench-copyout's image), and the output says so. Page cache
# dropped before each run; this tool's index cache is warm (one untimed run first, as a second
# container of an image would find it); the two tools take turns. Medians of RUNS runs, with
# `uptime` load at the start and the end.
#
#   scripts/bench-lxc.sh [RUNS]
set -euo pipefail
runs=${1:-3}
source "$(dirname "$0")/lib/bench.sh"
bench_setup lxc
command -v lxc-create >/dev/null || { echo "bench-lxc: lxc-create is not installed (apt-get install lxc)"; exit 1; }

src=${BENCH_IMAGE:-/work/main/bench-work/debian:bench}
if [ -f "${src%:*}/index.json" ]; then
    # A layout holding only the first layer of $src, with the same image config otherwise.
    python3 - "${src%:*}" "${src##*:}" "$work/L" <<'PY'
import hashlib, json, os, shutil, sys
src, tag, out = sys.argv[1:]
blob = lambda d: os.path.join(src, "blobs", *d.split(":"))
index = json.load(open(os.path.join(src, "index.json")))
desc = next(m for m in index["manifests"] if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag)
manifest = json.load(open(blob(desc["digest"])))
config = json.load(open(blob(manifest["config"]["digest"])))
config["rootfs"]["diff_ids"] = config["rootfs"]["diff_ids"][:1]
config["history"] = [h for h in config.get("history", []) if not h.get("empty_layer")][:1]
os.makedirs(os.path.join(out, "blobs", "sha256"))
def put(data):
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    open(os.path.join(out, "blobs", "sha256", d[7:]), "wb").write(data)
    return d
layer = manifest["layers"][0]
shutil.copyfile(blob(layer["digest"]), os.path.join(out, "blobs", "sha256", layer["digest"][7:]))
c = json.dumps(config).encode()
manifest["config"] = {"mediaType": manifest["config"]["mediaType"], "digest": put(c), "size": len(c)}
manifest["layers"] = [layer]
m = json.dumps(manifest).encode()
json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
           "digest": put(m), "size": len(m), "annotations": {"org.opencontainers.image.ref.name": "minbase"}}]},
          open(os.path.join(out, "index.json"), "w"))
open(os.path.join(out, "oci-layout"), "w").write('{"imageLayoutVersion":"1.0.0"}')
PY
    image="$work/L:minbase"
    what="Debian bookworm minbase (layer 1 of $src)"
else
    mixed_image >/dev/null
    image="$work/L:mixed"
    what="the many fixture + 8 x 48 MB gzip layer (no $src here)"
fi

mkdir -p "$work/bin" "$work/lxc"
ln -s "$bin/umoci" "$work/bin/umoci"
echo "lxc.net.0.type = empty" > "$work/lxc.conf"
n=0
create() {  # ours | debian
    n=$((n + 1))
    local path=$PATH
    [ "$1" = ours ] && path="$work/bin:$PATH"
    cold
    local t
    t=$(PATH=$path UMOCI_CACHE_DIR="$work/cache" seconds lxc-create -P "$work/lxc" -n "c$n" -f "$work/lxc.conf" -t oci -- --url "oci:$image")
    [ -n "$(ls -A "$work/lxc/c$n/rootfs" 2>/dev/null)" ] || { echo "bench-lxc: lxc-create with $1's umoci made no rootfs" >&2; exit 1; }
    lxc-destroy -P "$work/lxc" -n "c$n" >/dev/null
    echo "$t"
}
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
create ours >/dev/null
declare -a a=() b=()
for _ in $(seq "$runs"); do
    a+=("$(create ours)")
    b+=("$(create debian)")
done
ours=$(printf '%s\n' "${a[@]}" | median)
theirs=$(printf '%s\n' "${b[@]}" | median)
printf 'lxc-create -t oci of %s, median of %s, cold page cache; load %s -> %s\n' "$what" "$runs" "$load_start" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-44s %9s %8s   %s\n' "" "seconds" "ratio" "runs"
printf '%-44s %8.3fs %8s   %s\n' "with this tool's umoci first on PATH" "$ours" "" "${a[*]}"
printf '%-44s %8.3fs %7.2fx   %s\n' "with Debian's /usr/bin/umoci" "$theirs" "$(echo "$ours / $theirs" | bc -l)" "${b[*]}"
