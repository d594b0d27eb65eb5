//! The Transfer gRPC API, `transfer.v1`, generated from `transfer/v1/transfer.proto`.
//!
//! The proto file is the contract: every message and field is documented there.

#![forbid(unsafe_code)]

pub mod codec;
pub mod possession;

/// Generated messages, client and server for package `transfer.v1`.
pub mod v1 {
    tonic::include_proto!("transfer.v1");
}

/// How many leading bytes `CheckUploadRequest.head_md5` covers: it is the MD5 of a
/// file's first min(size, `HEAD_MD5_LEN`) bytes.
pub const HEAD_MD5_LEN: u64 = 1 << 20;

/// The encoded `FileDescriptorSet` of the API (with its imports), for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/transfer_descriptor.bin"));
