#!/usr/bin/env bash
# virtwire's whole test suite. Installs what the tests need when it is missing, then
# runs every test. This is the command README.md gives and .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

# System packages the tests use (Debian names).
APT_PACKAGES=(pkg-config
    # Linux guests for the guest tests (scripts/guest/build.sh, tests/support/guest.rs).
    qemu-system-x86 linux-image-amd64 busybox-static iperf3 ethtool cpio xz-utils zstd
    # Network namespaces for the tap ports of the switch tests (tests/guest_switch.rs).
    iproute2
    # DPDK testpmd and its vhost PMD: the reference vhost-user backend (tests/support/testpmd.rs).
    dpdk-dev librte-net-vhost23 librte-mempool-ring23)

missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
    [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null 2>&1 || { echo "cargo (Rust stable) is required" >&2; exit 1; }
rustup component add rustfmt clippy >/dev/null 2>&1 || true

log "format"
cargo fmt --all -- --check

log "clippy"
cargo clippy --workspace --all-targets -- -D warnings

log "build (release profile, as benchmarked)"
cargo build --release --workspace

log "tests"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
set +e
cargo test --workspace -- --test-threads=2 2>&1 | tee "$out"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole suite (cargo prints one per test binary).
awk '/^test result:/ { p += $4; f += $6 } END { printf "%d passed, %d failed\n", p, f }' "$out"
exit "$status"
