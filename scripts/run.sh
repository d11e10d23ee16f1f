#!/usr/bin/env bash
# Builds Flotilla and runs `flotilla demo`: a local 3-node cluster (64
# shards, data in ./flotilla-demo, reused by the next start) that prints its
# client endpoints, metrics URLs and example commands, until Ctrl-C.
# Arguments, if given, replace `demo` (e.g. `bash scripts/run.sh demo
# --base-port 7001`, or `bash scripts/run.sh sim --seeds 1000`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh

if [ "$#" -eq 0 ]; then
    set -- demo
fi
# exec: Ctrl-C and SIGTERM go straight to flotilla, which stops its nodes.
cargo build --bin flotilla
exec "$CARGO_TARGET_DIR/debug/flotilla" "$@"
