#!/usr/bin/env bash
# Copies the pure Raft core and its tests into a small stand-alone crate, so
# that mutation testing (cargo-mutants) rebuilds only src/raft and src/sim,
# in seconds, instead of the whole node with RocksDB.
#
# Usage: bash scripts/raft-scratch.sh DEST
#   DEST gets Cargo.toml, src/{lib.rs,raft,sim}, tests/{raft_suites.rs,raft/,simulation.rs,common}.
#   Real copies, not links: cargo-mutants edits its own copy of the tree.
# Then, for example:
#   cd DEST && CARGO_TARGET_DIR=DEST/target cargo test
#   cd DEST && cargo mutants --file 'src/raft/**' --timeout 300
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${1:?usage: raft-scratch.sh DEST}"
mkdir -p "$dest/src" "$dest/tests"
rm -rf "$dest/src/raft" "$dest/src/sim" "$dest/tests"
mkdir -p "$dest/tests"
cp -r "$repo/src/raft" "$repo/src/sim" "$dest/src/"
# The simulator's multi-group mode drives whole nodes (runtime, RocksDB):
# not part of the core-only crate.
rm -rf "$dest/src/sim/multi"
sed -i '/^pub mod multi;$/d' "$dest/src/sim/mod.rs"
cp -r "$repo/tests/common" "$dest/tests/"
cp "$repo/tests/simulation.rs" "$dest/tests/"
# The raft_*.rs suites become modules of ONE test binary. Each suite
# instantiates the generic core (RawNode<MemoryLogStore>) anew, so as
# separate binaries every mutant would compile the core a dozen times.
mkdir -p "$dest/tests/raft"
{
    echo "//! Every tests/raft_*.rs suite as a module of one binary (scripts/raft-scratch.sh)."
    echo "mod common;"
    for suite in "$repo"/tests/raft_*.rs; do
        name="$(basename "$suite" .rs)"
        sed -e '/^mod common;$/d' -e 's/^use common::/use crate::common::/' "$suite" >"$dest/tests/raft/$name.rs"
        echo "#[path = \"raft/$name.rs\"]"
        echo "mod $name;"
    done
} >"$dest/tests/raft_suites.rs"
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
