//! Image indexes, manifests and configs as `oci-spec` types (Docker's
//! schema 2 manifests and lists read the same way): what a pull and the
//! node's cache read of them.

use super::ImageConfig;
use containerd_client::types::Descriptor;
use oci_spec::image::{Descriptor as OciDescriptor, ImageConfiguration, ImageIndex, ImageManifest};
use serde::Deserialize;
use std::collections::HashMap;

/// What a manifest reference resolved to.
#[derive(Debug)]
pub enum Top {
    Index(Box<ImageIndex>),
    Manifest(Box<ImageManifest>),
}

/// Just enough of a body to tell an index from a manifest (an index has
/// `manifests`, whatever its media type says or leaves out).
#[derive(Deserialize)]
struct Probe {
    manifests: Option<serde::de::IgnoredAny>,
}

/// Parses a manifest or an index.
pub fn parse_top(body: &[u8]) -> Result<Top, String> {
    let probe: Probe =
        serde_json::from_slice(body).map_err(|e| format!("manifest is not JSON: {e}"))?;
    match probe.manifests {
        Some(_) => serde_json::from_slice(body)
            .map(|i| Top::Index(Box::new(i)))
            .map_err(|e| format!("not an image index: {e}")),
        None => parse_manifest(body).map(|m| Top::Manifest(Box::new(m))),
    }
}

/// Parses an image manifest.
pub fn parse_manifest(body: &[u8]) -> Result<ImageManifest, String> {
    serde_json::from_slice(body).map_err(|e| format!("not an image manifest: {e}"))
}

/// Parses an image config.
pub fn parse_config(body: &[u8]) -> Result<ImageConfiguration, String> {
    serde_json::from_slice(body).map_err(|e| format!("not an image config: {e}"))
}

/// The descriptor as containerd takes it.
pub fn to_containerd(d: &OciDescriptor) -> Descriptor {
    Descriptor {
        media_type: d.media_type().to_string(),
        digest: d.digest().to_string(),
        size: i64::try_from(d.size()).unwrap_or(i64::MAX),
        annotations: HashMap::new(),
    }
}

/// This machine's linux manifest in an index.
pub fn pick_platform(index: &ImageIndex) -> Option<Descriptor> {
    let arch = crate::seccomp::go_arch(std::env::consts::ARCH);
    index.manifests().iter().find_map(|m| {
        let p = m.platform().as_ref()?;
        (p.os().to_string() == "linux" && p.architecture().to_string() == arch)
            .then(|| to_containerd(m))
    })
}

/// The config's `rootfs.diff_ids`.
pub fn diff_ids(config: &ImageConfiguration) -> Vec<String> {
    config.rootfs().diff_ids().clone()
}

/// The parts of the config a workspace needs.
pub fn image_config(config: &ImageConfiguration) -> ImageConfig {
    let Some(c) = config.config() else {
        return ImageConfig::default();
    };
    ImageConfig {
        user: c.user().clone().unwrap_or_default(),
        env: c.env().clone().unwrap_or_default(),
        entrypoint: c.entrypoint().clone().unwrap_or_default(),
        cmd: c.cmd().clone().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn picks_this_platform() {
        let arch = crate::seccomp::go_arch(std::env::consts::ARCH);
        let idx = json!({"schemaVersion": 2, "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": D1, "size": 1,
             "platform": {"os": "linux", "architecture": "s390x"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": D2, "size": 2,
             "platform": {"os": "linux", "architecture": arch}}
        ]});
        let Ok(Top::Index(i)) = parse_top(idx.to_string().as_bytes()) else {
            panic!("an index")
        };
        assert_eq!(pick_platform(&i).unwrap().digest, D2);
        let empty = json!({"schemaVersion": 2, "manifests": []}).to_string();
        let Ok(Top::Index(i)) = parse_top(empty.as_bytes()) else {
            panic!("an index")
        };
        assert!(pick_platform(&i).is_none());
    }

    #[test]
    fn reads_docker_manifests_and_configs() {
        let m = json!({"schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": D1, "size": 7},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": D2, "size": 9}]});
        let Ok(Top::Manifest(m)) = parse_top(m.to_string().as_bytes()) else {
            panic!("a manifest")
        };
        assert_eq!(to_containerd(m.config()).size, 7);
        assert_eq!(
            to_containerd(&m.layers()[0]).media_type,
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        );
        let c = json!({"architecture": "amd64", "os": "linux",
            "config": {"User": "1000:1000", "Env": ["A=1"], "Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": [D1]}});
        let c = parse_config(c.to_string().as_bytes()).unwrap();
        assert_eq!(diff_ids(&c), [D1]);
        assert_eq!(
            image_config(&c),
            ImageConfig {
                user: "1000:1000".into(),
                env: vec!["A=1".into()],
                entrypoint: vec![],
                cmd: vec!["sh".into()]
            }
        );
        assert!(parse_top(b"[1]").is_err());
        assert!(parse_config(b"{}").is_err(), "no rootfs: not a config");
    }
}
