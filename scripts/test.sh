#!/usr/bin/env bash
# Runs the whole test suite: installs what is missing, builds, and runs every test (unit,
# command-line, interop with Debian's umoci and skopeo). Prints a closing "N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
command -v swift >/dev/null 2>&1 || export PATH="/opt/swift/usr/bin:$PATH"

log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
swift test --disable-xctest 2>&1 | tee "$log" | grep -E '^(✘|✔ Suite|􀢄|.*error:)|Test run with'
status=${PIPESTATUS[0]}
set -e
passed=$(grep -E '^✔ Test .* passed' "$log" | grep -cv '^✔ Test run with' || true)
failed=$(grep -E '^✘ Test .* failed after' "$log" | grep -cv '^✘ Test run with' || true)
echo "$passed passed, $failed failed"
exit "$status"
