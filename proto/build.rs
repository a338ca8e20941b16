fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_prost_build::configure().compile_protos(
        &["proto/chaosdaemon.proto", "proto/agent.proto"],
        &["proto"],
    )?;
    Ok(())
}
