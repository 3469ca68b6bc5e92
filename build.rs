//! Generates the gRPC code from proto/ and the descriptor set for server reflection.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed=proto/haconiwa.proto");
    tonic_prost_build::configure()
        // Undecodable requests are INVALID_ARGUMENT (src/api/codec.rs).
        .codec_path("crate::api::codec::ProtoCodec")
        .file_descriptor_set_path(out.join("haconiwa_descriptor.bin"))
        .compile_protos(&["proto/haconiwa.proto"], &["proto"])?;
    Ok(())
}
