#!/usr/bin/env bash
# Idempotent set-up for building and testing Flotilla on a Debian-like machine.
#
# Installs (only if missing) the system packages the build needs:
#   build-essential  C/C++ compiler and make: RocksDB, lz4 and zstd are compiled from source
#   clang            used by bindgen to parse RocksDB's C headers
#   libclang-dev     libclang.so, loaded by bindgen at build time
#   ca-certificates  so cargo can fetch crates over HTTPS
#   prometheus       the Prometheus server (and promtool) that tests/metrics.rs runs against
#                    a node's /metrics and tests/deploy.rs uses to check deploy/prometheus.yml
#                    (only the binaries are used; its system service is neither needed nor started)
#   etcd-server      etcd 3.4, the reference that tests/bench_cli.rs drives `flotilla bench --target etcd`
#                    against and scripts/bench-compare.sh measures Flotilla beside (binary only, as above)
# protoc is NOT needed: build.rs uses the one vendored by the protoc-bin-vendored crate.
#
# Also checks that cargo is available and exports CARGO_TARGET_DIR
# (default: $HOME/.cache/flotilla-target) so every script and profile shares
# one build of RocksDB's C++ (about 13 minutes on 2 cores the first time).
#
# Usage: `bash scripts/setup.sh`, or `source scripts/setup.sh` from another script.

set -euo pipefail

FLOTILLA_APT_PACKAGES=(build-essential clang libclang-dev ca-certificates prometheus etcd-server)

flotilla_as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "setup: need root to run '$*' but sudo is not installed; run as root or install: ${FLOTILLA_APT_PACKAGES[*]}" >&2
        exit 1
    fi
}

flotilla_is_installed() {
    # Capture first: `dpkg -s | grep -q` can fail under pipefail when grep exits early.
    local status
    status="$(dpkg -s "$1" 2>/dev/null)" || return 1
    [[ "$status" == *$'\nStatus: install ok installed'* || "$status" == 'Status: install ok installed'* ]]
}

flotilla_install_packages() {
    if ! command -v dpkg >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
        echo "setup: not a Debian-like system (no dpkg/apt-get); make sure a C++ compiler, clang and libclang are installed." >&2
        return 0
    fi
    local missing=() p
    for p in "${FLOTILLA_APT_PACKAGES[@]}"; do
        flotilla_is_installed "$p" || missing+=("$p")
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        echo "setup: system packages already installed: ${FLOTILLA_APT_PACKAGES[*]}"
        return 0
    fi
    echo "setup: installing missing packages: ${missing[*]}"
    flotilla_as_root env DEBIAN_FRONTEND=noninteractive apt-get update
    flotilla_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
}

flotilla_check_cargo() {
    if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
    if ! command -v cargo >/dev/null 2>&1; then
        echo "setup: cargo not found. Install a Rust toolchain (1.88 or newer), e.g. from https://rustup.rs, then rerun." >&2
        exit 1
    fi
    echo "setup: using $(cargo --version)"
}

flotilla_install_packages
flotilla_check_cargo

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flotilla-target}"
echo "setup: CARGO_TARGET_DIR=$CARGO_TARGET_DIR"
