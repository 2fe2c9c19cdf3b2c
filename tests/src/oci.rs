//! Pushes OCI artifacts to a test registry over the distribution API
//! (blob upload, then the manifest): the devcontainer features the
//! repository tests install, made from files the test names.

use sha2::{Digest, Sha256};

fn digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Uploads `data` as a blob of `repo` (POST, then PUT with the digest).
async fn push_blob(http: &reqwest::Client, base: &str, data: &[u8]) -> String {
    let d = digest(data);
    let resp = http
        .post(format!("{base}/blobs/uploads/"))
        .send()
        .await
        .expect("start a blob upload");
    assert_eq!(resp.status(), 202, "start a blob upload");
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let url = match location.starts_with("http") {
        true => location,
        false => format!("{}{location}", base.split("/v2/").next().unwrap()),
    };
    let sep = if url.contains('?') { '&' } else { '?' };
    let resp = http
        .put(format!("{url}{sep}digest={d}"))
        .header("content-type", "application/octet-stream")
        .body(data.to_vec())
        .send()
        .await
        .expect("upload a blob");
    assert_eq!(resp.status(), 201, "upload a blob");
    d
}

/// A tar of `files` ((path, content); install.sh executable).
pub fn tar_of(files: &[(&str, &str)]) -> Vec<u8> {
    let mut t = tar::Builder::new(Vec::new());
    for (path, content) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(if path.ends_with(".sh") { 0o755 } else { 0o644 });
        t.append_data(&mut h, format!("./{path}"), content.as_bytes())
            .expect("tar entry");
    }
    t.into_inner().expect("tar")
}

/// Pushes a devcontainer feature made of `files` as
/// `<registry>/<repo>:<tag>` (the layout `devcontainer features publish`
/// makes: an empty config of type application/vnd.devcontainers and one
/// tar layer); returns the reference.
pub async fn push_feature(registry: &str, repo: &str, tag: &str, files: &[(&str, &str)]) -> String {
    let http = reqwest::Client::new();
    let base = format!("http://{registry}/v2/{repo}");
    let layer = tar_of(files);
    let config = b"{}".to_vec();
    let layer_digest = push_blob(&http, &base, &layer).await;
    let config_digest = push_blob(&http, &base, &config).await;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.devcontainers", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.devcontainers.layer.v1+tar", "digest": layer_digest,
                    "size": layer.len(),
                    "annotations": {"org.opencontainers.image.title": format!("{}.tgz", repo.replace('/', "-"))}}],
    });
    put_manifest(&http, &base, tag, &manifest).await;
    format!("{registry}/{repo}:{tag}")
}

/// Pushes an image of one layer, `blob` of `media_type`, whose config
/// names `diff_id` (right or not: the test says), as
/// `<registry>/<repo>:<tag>`; returns the reference.
pub async fn push_image(
    registry: &str,
    repo: &str,
    tag: &str,
    blob: &[u8],
    media_type: &str,
    diff_id: &str,
) -> String {
    let http = reqwest::Client::new();
    let base = format!("http://{registry}/v2/{repo}");
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }))
    .unwrap();
    let layer_digest = push_blob(&http, &base, blob).await;
    let config_digest = push_blob(&http, &base, &config).await;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": media_type, "digest": layer_digest, "size": blob.len()}],
    });
    put_manifest(&http, &base, tag, &manifest).await;
    format!("{registry}/{repo}:{tag}")
}

/// "sha256:<hex>" of `data` (a diff_id, of a tar).
pub fn sha256(data: &[u8]) -> String {
    digest(data)
}

/// PUTs an OCI image manifest as `<base>/manifests/<tag>`; it must be 201.
async fn put_manifest(http: &reqwest::Client, base: &str, tag: &str, manifest: &serde_json::Value) {
    let resp = http
        .put(format!("{base}/manifests/{tag}"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(serde_json::to_vec(manifest).unwrap())
        .send()
        .await
        .expect("put the manifest");
    let status = resp.status();
    assert_eq!(
        status,
        201,
        "put the manifest: {}",
        resp.text().await.unwrap_or_default()
    );
}
