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

    // The descriptor set lets the node serve gRPC reflection (grpcurl);
    // `src/proto.rs` includes it as `FILE_DESCRIPTOR_SET`.
    let descriptors = PathBuf::from(std::env::var("OUT_DIR")?).join("flotilla_descriptor.bin");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .file_descriptor_set_path(descriptors)
        .compile_with_config(config, PROTOS, &["proto"])?;

    // etcd's KV API (a wire-compatible subset) for `flotilla bench --target
    // etcd`: client stubs only, and kept out of the descriptor set above so
    // that reflection lists only the services a node really serves.
    let mut etcd = tonic_prost_build::Config::new();
    etcd.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure().build_server(false).compile_with_config(
        etcd,
        &["proto/etcd/rpc.proto"],
        &["proto"],
    )?;
    Ok(())
}
