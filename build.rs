//! Generates the gRPC wire types and service stubs from `proto/*.proto`.
//!
//! Uses the `protoc` binary shipped by the `protoc-bin-vendored` crate, so no
//! system protoc is needed. The generated code is included by `src/proto.rs`.

use std::path::PathBuf;

const PROTOS: &[&str] = &["proto/kv.proto", "proto/raft.proto", "proto/admin.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Rerun when anything under proto/ changes (including new files).
    println!("cargo:rerun-if-changed=proto");

    let protoc: PathBuf = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);

    tonic_prost_build::configure().build_client(true).build_server(true).compile_with_config(
        config,
        PROTOS,
        &["proto"],
    )?;
    Ok(())
}
