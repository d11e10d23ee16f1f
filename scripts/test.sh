#!/usr/bin/env bash
# Runs every test of the workspace: unit tests, integration tests (including
# the deterministic Raft simulator and the Raft purity check) and doc tests.
# Extra arguments are passed to cargo test, e.g. `bash scripts/test.sh -- --nocapture`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh

# All targets (lib, bins, tests, examples, benches in test mode), then doc tests,
# which --all-targets does not include.
cargo test --workspace --all-targets "$@"
cargo test --workspace --doc "$@"
