//! `transferd`: the Transfer gRPC service.
//!
//! Layers, with dependencies running one way (top to bottom):
//! - [`grpc`]: thin tonic handlers: parse a request, call the protocol, convert errors once.
//!   [`bulk_route`] serves `UploadChunks` and `Download` below tonic's codec, to save a
//!   copy of every byte they move.
//! - [`upload`], [`download`], [`files`]: the protocol rules (valid indexes, duplicates,
//!   windows, whole-file MD5), written against the two storage traits below.
//! - [`ledger`] ([`ledger::Ledger`]): the record of uploads, committed chunks and content.
//! - [`blob`] ([`blob::BlobStore`]): the bytes, shaped like a multipart upload.

#![forbid(unsafe_code)]

pub mod blob;
pub mod bulk_route;
pub mod config;
pub mod connections;
pub mod control;
pub mod download;
pub mod error;
pub mod files;
pub mod grpc;
pub mod identity;
pub mod key_admin;
pub mod layout;
pub mod ledger;
pub mod lifecycle;
pub mod metrics;
pub mod replica;
pub mod request;
pub mod server;
pub mod store_config;
pub mod telemetry;
pub mod upload;

pub use config::Settings;
pub use error::ServiceError;
