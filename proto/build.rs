//! Compiles `transfer/v1/transfer.proto` with the pure-Rust `protox` compiler, so building
//! needs no system `protoc`. The descriptor set is also written to OUT_DIR for gRPC reflection.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "transfer/v1/transfer.proto";
    println!("cargo:rerun-if-changed={proto}");

    let descriptors = protox::compile([proto], ["."])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("transfer_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        // Chunk payloads stay reference-counted `Bytes`: no copy between decode and disk.
        .bytes(".")
        // Undecodable requests are the sender's fault: INVALID_ARGUMENT (see codec.rs).
        .codec_path("crate::codec::StrictProstCodec")
        .compile_fds(descriptors)?;
    Ok(())
}
