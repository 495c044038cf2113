#!/usr/bin/env bash
# Installs what this project needs on Debian 12 and builds it. Safe to run again: packages
# already present are not reinstalled.
#   C libraries (headers via pkg-config): libssl-dev (libcrypto), zlib1g-dev, libisal-dev (ISA-L's
#   inflate and deflate), libzstd-dev, libfuse3-dev, libcurl4-openssl-dev (registry HTTP and TLS)
#   FUSE at run time: fuse3
#   peers for interop tests and benchmarks: umoci, skopeo, runc, fuse-overlayfs, hyperfine,
#   lxc and jq (lxc-create's OCI template calls umoci from PATH), uidmap (newuidmap: rootless runc
#   with a subordinate id range)
#   fixtures: busybox-static (the embedded default image), python3 and zstd (test images),
#   debootstrap (benchmark image), bc (benchmark arithmetic), pigz and isal (igzip): the
#   benchmarks' compression and decompression floors
#   registry tests: docker-registry (distribution 2.8.2, the server), apache2-utils (htpasswd),
#   openssl (the tests' CA and server certificate)
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(pkg-config libssl-dev zlib1g-dev libisal-dev libzstd-dev libfuse3-dev fuse3 umoci skopeo strace runc
          fuse-overlayfs hyperfine busybox-static debootstrap python3 zstd bc time lxc jq uidmap
          pigz isal groff-base man-db mandoc systemd libcurl4-openssl-dev docker-registry apache2-utils openssl)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "setup: installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v swift >/dev/null 2>&1; then
    if [ -x /opt/swift/usr/bin/swift ]; then
        export PATH="/opt/swift/usr/bin:$PATH"
    else
        echo "setup: a Swift 6 toolchain is needed (swift.org's Debian 12 build); 'swift' is not on PATH" >&2
        exit 1
    fi
fi

swift build -c "${UMOCI_BUILD_CONFIGURATION:-debug}" 2>&1 | grep -vE '^\[[0-9]+/[0-9]+\]' || true
test "${PIPESTATUS[0]}" -eq 0
