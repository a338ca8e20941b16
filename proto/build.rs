fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        // The compiled descriptors, for the golden test that pins pb.ChaosDaemon.
        .file_descriptor_set_path(out_dir.join("descriptors.bin"))
        .compile_protos(
            &["proto/chaosdaemon.proto", "proto/agent.proto"],
            &["proto"],
        )?;
    Ok(())
}
