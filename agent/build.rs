//! Generates the KServe v2 gRPC messages and service (`proto/grpc_service.proto`) with the
//! protoc shipped by protoc-bin-vendored: a build needs no system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/grpc_service.proto";
    println!("cargo:rerun-if-changed={proto}");
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure().build_client(true).build_transport(false).compile_with_config(
        config,
        &[proto],
        &["proto"],
    )?;
    Ok(())
}
