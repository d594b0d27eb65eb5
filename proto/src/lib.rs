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

/// Status metadata that says, beyond the code, what a client can do about an error.
pub const REASON_METADATA: &str = "x-transfer-reason";
/// The reason of a RESOURCE_EXHAUSTED the server gives while its storage is full: unlike
/// a request over a limit, asking again once space is freed can succeed.
pub const REASON_STORAGE_FULL: &str = "storage-full";

/// The encoded `FileDescriptorSet` of the API (with its imports), for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/transfer_descriptor.bin"));
