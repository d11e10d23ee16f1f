//! Generated gRPC wire types and service stubs for package `flotilla.v1`.
//!
//! This module owns only what `build.rs` generates from `proto/kv.proto`
//! (client API), `proto/raft.proto` (peer traffic) and `proto/admin.proto`
//! (operator API): prost messages, tonic clients (`*_client`) and servers
//! (`*_server`). Nothing is hand-written here.
//!
//! Conversion between these wire types and the core's types lives with the
//! code that uses them (src/transport for Raft messages, src/server for the
//! client and admin services), never here and never in src/raft, which must
//! not depend on protobuf.

// Generated code: its docs come from the .proto comments, which do not cover
// every generated item, and clippy is not ours to satisfy there.
#![allow(missing_docs, clippy::all)]

tonic::include_proto!("flotilla.v1");

/// Every `flotilla.v1` proto file as an encoded `FileDescriptorSet`, for
/// the reflection service.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("flotilla_descriptor");
