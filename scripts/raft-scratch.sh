#!/usr/bin/env bash
# Copies the pure Raft core and its tests into a small stand-alone crate, so
# that mutation testing (cargo-mutants) rebuilds only src/raft and src/sim,
# in seconds, instead of the whole node with RocksDB.
#
# Usage: bash scripts/raft-scratch.sh DEST
#   DEST gets Cargo.toml, src/{lib.rs,raft,sim}, tests/{raft_*.rs,simulation.rs,common}.
#   Real copies, not links: cargo-mutants edits its own copy of the tree.
# Then, for example:
#   cd DEST && CARGO_TARGET_DIR=DEST/target cargo test
#   cd DEST && cargo mutants --file 'src/raft/**' --timeout 300
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${1:?usage: raft-scratch.sh DEST}"
mkdir -p "$dest/src" "$dest/tests"
rm -rf "$dest/src/raft" "$dest/src/sim" "$dest/tests/common"
cp -r "$repo/src/raft" "$repo/src/sim" "$dest/src/"
cp -r "$repo/tests/common" "$dest/tests/"
cp "$repo"/tests/raft_*.rs "$repo/tests/simulation.rs" "$dest/tests/"
cp "$repo/Cargo.lock" "$dest/"
thiserror="$(grep -E '^thiserror *=' "$repo/Cargo.toml")"
cat >"$dest/Cargo.toml" <<TOML
[package]
name = "flotilla"
version = "0.1.0"
edition = "2021"

[dependencies]
$thiserror

# As the workspace's dev profile: the simulator needs optimised code.
[profile.dev]
opt-level = 2
debug = "line-tables-only"
TOML
cat >"$dest/src/lib.rs" <<'RS'
//! The pure Raft core and its simulator, copied by scripts/raft-scratch.sh.
pub mod raft;
pub mod sim;
RS
echo "raft-scratch: $dest ready"
