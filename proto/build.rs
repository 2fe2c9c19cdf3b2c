//! Generates the Rust types of `proto/berth/*.proto` with prost.

fn main() -> std::io::Result<()> {
    println!("cargo:rerun-if-changed=proto");
    prost_build::Config::new()
        .btree_map(["."])
        .type_attribute(".", "#[derive(serde::Serialize)]")
        // A git token is never printed: its Debug is written by hand and
        // serialisation leaves it out.
        .skip_debug(["berth.agent.v1.GitCredential", "berth.agent.v1.Secret"])
        .field_attribute(
            "berth.agent.v1.GitCredential.token",
            "#[serde(skip_serializing)]",
        )
        // Nor is a secret's value.
        .field_attribute("berth.agent.v1.Secret.value", "#[serde(skip_serializing)]")
        .compile_protos(
            &["proto/berth/agent.proto", "proto/berth/link.proto"],
            &["proto"],
        )
}
