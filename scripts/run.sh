#!/usr/bin/env bash
# Builds Flotilla and runs it. For now that is the deterministic Raft
# simulator over 200 seeds; arguments, if given, replace `sim --seeds 200`
# (e.g. `bash scripts/run.sh sim --seeds 1000`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh

if [ "$#" -eq 0 ]; then
    set -- sim --seeds 200
fi
cargo run -- "$@"
