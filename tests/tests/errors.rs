//! Bad input gets a typed error with a stable code and leaves nothing behind.

use berth_agent::client::ClientError;
use berth_proto::agent::{self as pb, request::Command};
use berth_tests::{assert_clean, sh, Node, NodeOptions, Registry};
use std::path::Path;

fn code(r: Result<pb::WorkspaceStatus, ClientError>) -> String {
    match r {
        Ok(s) => panic!("expected an error, got {s:?}"),
        Err(e) => e
            .code()
            .unwrap_or_else(|| panic!("not an agent error: {e}"))
            .to_string(),
    }
}

async fn create_with(
    node: &Node,
    spec: pb::WorkspaceSpec,
    auth: Option<pb::RegistryAuth>,
) -> Result<pb::WorkspaceStatus, ClientError> {
    node.client()
        .await
        .status_call(Command::Create(pb::CreateRequest {
            spec: Some(spec),
            auth,
            start: true,
            restore: None,
            secrets: None,
        }))
        .await
}

/// The error code of an exec that the agent refuses (None if it ran).
async fn exec_code(node: &Node, name: &str, argv: &[&str]) -> Option<String> {
    let req = pb::ExecRequest {
        name: name.into(),
        argv: argv.iter().map(|a| a.to_string()).collect(),
        ..Default::default()
    };
    node.client()
        .await
        .exec(req, b"")
        .await
        .err()
        .map(|e| e.code().unwrap_or("transport").to_string())
}

/// Copies the `tiny` repository and its blobs into `dst` (a registry root).
fn copy_tiny(src: &Path, dst: &Path) -> (String, String) {
    let v2 = src.join("docker/registry/v2");
    let link =
        std::fs::read_to_string(v2.join("repositories/tiny/_manifests/tags/latest/current/link"))
            .unwrap();
    let blob = |d: &str| {
        v2.join("blobs/sha256")
            .join(&d[7..9])
            .join(&d[7..])
            .join("data")
    };
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(&link)).unwrap()).unwrap();
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let config = manifest["config"]["digest"].as_str().unwrap().to_string();
    assert!(
        sh(&format!(
            "mkdir -p {d}/docker/registry/v2 && cp -a {s}/repositories {d}/docker/registry/v2/ && \
        rm -rf $(ls -d {d}/docker/registry/v2/repositories/* | grep -v '/tiny$')",
            s = v2.display(),
            d = dst.display()
        ))
        .0
    );
    for d in [&link, &layer, &config] {
        let to = dst
            .join("docker/registry/v2/blobs/sha256")
            .join(&d[7..9])
            .join(&d[7..]);
        std::fs::create_dir_all(&to).unwrap();
        std::fs::copy(blob(d), to.join("data")).unwrap();
    }
    let layer_path = dst
        .join("docker/registry/v2/blobs/sha256")
        .join(&layer[7..9])
        .join(&layer[7..])
        .join("data");
    (layer, layer_path.display().to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_refused_with_stable_codes_and_no_leftovers() {
    let mut node = Node::new(NodeOptions::default());
    node.start_agent().await;
    let baseline = berth_tests::clean::nft_rules(&node.nft_table);
    let reg = node.registry.addr.clone();
    let scratch = node.dir.join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let storage = berth_tests::images(&["tiny"]);

    // First, while this containerd holds no layer yet: a registry serving a
    // blob whose bytes do not match its digest.
    let corrupt_root = node.dir.join("corrupt");
    let (layer, layer_path) = copy_tiny(&storage, &corrupt_root);
    let len = std::fs::metadata(&layer_path).unwrap().len() as usize;
    std::fs::write(&layer_path, vec![0x42u8; len]).unwrap();
    let corrupt = Registry::start(&corrupt_root, None, &scratch);
    let mut bad = node.spec("bad");
    bad.image = format!("{}/tiny:latest", corrupt.addr);
    let err = create_with(&node, bad, None).await.unwrap_err();
    assert_eq!(err.code(), Some("digest_mismatch"), "{err}");
    assert!(err.to_string().contains(&layer), "{err}");
    assert!(
        node.containerd.ctr_list(&["content", "active"]).len() <= 1,
        "no ingest left but the header line"
    );

    // Shape of the request.
    type Mutation = Box<dyn Fn(&mut pb::WorkspaceSpec)>;
    let cases: Vec<(&str, Mutation)> = vec![
        ("invalid_name", Box::new(|s| s.name = "Bad_Name".into())),
        ("invalid_name", Box::new(|s| s.name = "".into())),
        ("invalid_name", Box::new(|s| s.name = "../etc".into())),
        ("invalid_resources", Box::new(|s| s.cpu_millis = 0)),
        ("invalid_resources", Box::new(|s| s.memory_bytes = 0)),
        ("invalid_resources", Box::new(|s| s.pids = 0)),
        ("invalid_resources", Box::new(|s| s.disk_bytes = 0)),
        ("invalid_image", Box::new(|s| s.image = "tiny".into())),
        (
            "invalid_image",
            Box::new(|s| s.image = "127.0.0.1:1/UPPER:case".into()),
        ),
        ("disk_too_large", Box::new(|s| s.disk_bytes = 1 << 50)),
    ];
    for (want, mutate) in &cases {
        let mut spec = node.spec("bad");
        mutate(&mut spec);
        assert_eq!(&code(node.create(spec).await), want);
    }

    // What the registry says.
    for (image, want) in [
        (format!("{reg}/nope:latest"), "image_not_found"),
        (format!("{reg}/tiny:nope"), "image_not_found"),
        (
            format!("{reg}/tiny@sha256:{}", "0".repeat(64)),
            "image_not_found",
        ),
        ("127.0.0.1:1/tiny:latest".to_string(), "registry_error"),
    ] {
        let mut spec = node.spec("bad");
        spec.image = image.clone();
        assert_eq!(code(node.create(spec).await), want, "{image}");
    }

    // A registry that wants credentials.
    let htpasswd = scratch.join("htpasswd");
    assert!(
        sh(&format!(
            "htpasswd -Bbc {} berth s3cret",
            htpasswd.display()
        ))
        .0
    );
    let private = Registry::start(&storage, Some(&htpasswd), &scratch);
    let mut spec = node.spec("authd");
    spec.image = format!("{}/tiny:latest", private.addr);
    assert_eq!(
        code(create_with(&node, spec.clone(), None).await),
        "registry_unauthorized"
    );
    let wrong = pb::RegistryAuth {
        username: "berth".into(),
        password: "nope".into(),
    };
    assert_eq!(
        code(create_with(&node, spec.clone(), Some(wrong)).await),
        "registry_unauthorized"
    );

    // Nothing was made by any of the refusals.
    assert!(node.list().await.is_empty());
    assert_clean(&node, &baseline);

    // The right credentials work.
    let right = pb::RegistryAuth {
        username: "berth".into(),
        password: "s3cret".into(),
    };
    create_with(&node, spec, Some(right))
        .await
        .expect("create with credentials");

    // Conflicts, unknown names and stale generations.
    let mut g = node.spec("gen");
    g.generation = 5;
    node.create(g.clone()).await.unwrap();
    assert_eq!(
        node.create(g.clone()).await.unwrap().name,
        "gen",
        "same generation: idempotent"
    );
    g.generation = 6;
    assert_eq!(code(node.create(g).await), "already_exists");
    let stale = pb::StopRequest {
        name: "gen".into(),
        grace_seconds: 1,
        generation: 4,
    };
    assert_eq!(
        code(node.client().await.status_call(Command::Stop(stale)).await),
        "stale_generation"
    );
    assert_eq!(code(node.start("ghost").await), "not_found");
    assert_eq!(code(node.stop("ghost").await), "not_found");
    assert_eq!(code(node.status("Bad!").await), "invalid_name");
    assert_eq!(
        exec_code(&node, "ghost", &["true"]).await,
        Some("not_found".into())
    );
    assert_eq!(
        exec_code(&node, "gen", &[]).await,
        Some("invalid_request".into())
    );
    // A missing program is the caller's mistake, answered as a shell does.
    let req = pb::ExecRequest {
        name: "gen".into(),
        argv: vec!["/no/such/program".into()],
        ..Default::default()
    };
    let out = node.client().await.exec(req, b"").await.expect("answered");
    assert_eq!(out.exit_code, 127);
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such/program: command not found"));
    let cwd = pb::ExecRequest {
        name: "gen".into(),
        argv: vec!["true".into()],
        cwd: "/nope".into(),
        ..Default::default()
    };
    let refused = node.client().await.exec(cwd, b"").await.unwrap_err();
    assert_eq!(refused.code(), Some("invalid_request"));
    assert_eq!(node.sh("gen", "echo still-fine").await.1, "still-fine\n");

    // Garbage on the control socket does not hurt the agent.
    {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::UnixStream::connect(&node.socket).await.unwrap();
        s.write_all(&[0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0xff])
            .await
            .unwrap();
        let mut s = tokio::net::UnixStream::connect(&node.socket).await.unwrap();
        s.write_all(&[0xff; 64]).await.unwrap();
    }
    assert_eq!(node.list().await.len(), 2, "the agent still serves");

    for n in ["authd", "gen"] {
        node.delete(n).await.unwrap();
    }
    assert_clean(&node, &baseline);
}
