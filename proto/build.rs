//! Generates the Rust types of `proto/berth/*.proto` with prost.

fn main() -> std::io::Result<()> {
    println!("cargo:rerun-if-changed=proto");
    prost_build::Config::new()
        .btree_map(["."])
        .type_attribute(".", "#[derive(serde::Serialize)]")
        .compile_protos(
            &["proto/berth/agent.proto", "proto/berth/link.proto"],
            &["proto"],
        )
}
