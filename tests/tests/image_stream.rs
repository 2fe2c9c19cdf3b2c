//! A bottom layer is unpacked as it downloads (agent/src/image/stream.rs),
//! on the real containerd and registry. What lands in the layer's snapshot
//! is what its tar holds (modes, owners, a hard link, a symlink, a FIFO; a
//! whiteout, with nothing below it, skipped), for gzip and zstd layers. A
//! layer whose uncompressed bytes are not the config's diff_id fails the
//! pull with `digest_mismatch` and leaves no snapshot; so does a blob that
//! is not the compression its media type says (containerd's applier, tried
//! next, refuses it too).

use berth_proto::agent::{self as pb, request::Command};
use berth_tests::oci::{push_image, sha256};
use berth_tests::{Node, NodeOptions, Registry};
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

const GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

fn header(kind: tar::EntryType, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_size(0);
    h
}

/// A layer under `top/` (a name per image, to find its snapshot).
fn layer(top: &str) -> Vec<u8> {
    use tar::EntryType as K;
    let mut b = tar::Builder::new(Vec::new());
    b.append_data(&mut header(K::Directory, 0o750), top, std::io::empty())
        .unwrap();
    let mut h = header(K::Regular, 0o640);
    h.set_uid(1000);
    h.set_gid(1001);
    h.set_size(5);
    b.append_data(&mut h, format!("{top}/hello"), &b"hello"[..])
        .unwrap();
    b.append_link(
        &mut header(K::Link, 0o640),
        format!("{top}/again"),
        format!("{top}/hello"),
    )
    .unwrap();
    b.append_link(
        &mut header(K::Symlink, 0o777),
        format!("{top}/soft"),
        "hello",
    )
    .unwrap();
    b.append_data(
        &mut header(K::Fifo, 0o600),
        format!("{top}/pipe"),
        std::io::empty(),
    )
    .unwrap();
    b.append_data(
        &mut header(K::Regular, 0o644),
        format!("{top}/.wh.gone"),
        std::io::empty(),
    )
    .unwrap();
    b.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Every snapshot directory of node's containerd that holds `top`.
fn snapshots_with(node: &Node, top: &str) -> Vec<PathBuf> {
    let root = node
        .containerd
        .dir
        .join("root/io.containerd.snapshotter.v1.overlayfs/snapshots");
    std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("fs").join(top))
        .filter(|p| p.exists())
        .collect()
}

async fn pull(node: &Node, image: &str) -> Result<pb::PullResult, String> {
    match node
        .call(Command::Pull(pb::PullRequest {
            image: image.into(),
            auth: None,
        }))
        .await
    {
        Ok(pb::response::Result::Pulled(p)) => Ok(p),
        Ok(other) => Err(format!("{other:?}")),
        Err(e) => Err(e.code().unwrap_or("none").to_string()),
    }
}

fn assert_unpacked(dir: &Path) {
    let m = std::fs::metadata(dir).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o750, "{}", dir.display());
    let hello = dir.join("hello");
    assert_eq!(std::fs::read(&hello).unwrap(), b"hello");
    let m = std::fs::metadata(&hello).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (1000, 1001, 0o640));
    assert_eq!(m.mtime(), 1_700_000_000);
    assert_eq!(std::fs::metadata(dir.join("again")).unwrap().ino(), m.ino());
    assert_eq!(
        std::fs::read_link(dir.join("soft")).unwrap(),
        Path::new("hello")
    );
    let pipe = std::fs::symlink_metadata(dir.join("pipe")).unwrap();
    assert!(pipe.file_type().is_fifo());
    assert_eq!(pipe.mode() & 0o7777, 0o600);
    assert!(!dir.join(".wh.gone").exists() && !dir.join("gone").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bottom_layer_unpacks_as_it_downloads_and_is_checked() {
    let mut node = Node::new(NodeOptions::default());
    node.start_agent().await;
    let registry = Registry::start_writable_on(
        "127.0.0.1",
        &node.dir.join("pushed"),
        &node.dir.join("scratch"),
    );
    let reg = registry.addr.as_str();

    for (top, media, blob) in [
        ("gz", GZIP, gzip(&layer("gz"))),
        ("zst", ZSTD, zstd::encode_all(&layer("zst")[..], 3).unwrap()),
    ] {
        let image = push_image(reg, "streamed", top, &blob, media, &sha256(&layer(top))).await;
        let pulled = pull(&node, &image).await;
        assert!(pulled.is_ok(), "{pulled:?}\n{}", node.agent_log());
        let dirs = snapshots_with(&node, top);
        assert_eq!(dirs.len(), 1, "{dirs:?}");
        assert_unpacked(&dirs[0]);
    }
    let log = node.agent_log();
    assert_eq!(
        log.matches("layer unpacked as it downloaded").count(),
        2,
        "{log}"
    );

    // A config that names other bytes than the layer unpacks to.
    let lying = push_image(
        reg,
        "lying",
        "1",
        &gzip(&layer("lie")),
        GZIP,
        &sha256(b"something else"),
    )
    .await;
    assert_eq!(pull(&node, &lying).await.unwrap_err(), "digest_mismatch");
    assert!(
        snapshots_with(&node, "lie").is_empty(),
        "{:?}\n{}",
        node.containerd.ctr_list(&["snapshots", "ls"]),
        node.agent_log()
    );
    // Bytes that are not gzip at all, under a gzip media type.
    let garbage = b"this is not a gzip stream".repeat(100);
    let bad = push_image(reg, "garbage", "1", &garbage, GZIP, &sha256(&garbage)).await;
    assert!(pull(&node, &bad).await.is_err());
    // Nothing of either is left: no snapshot being extracted, no image.
    let left = node
        .containerd
        .ctr_list(&["snapshots", "ls"])
        .into_iter()
        .filter(|l| l.contains("extract"))
        .collect::<Vec<_>>();
    assert!(left.is_empty(), "{left:?}");
    let images = node.containerd.ctr_list(&["images", "ls", "-q"]);
    assert_eq!(images.len(), 2, "{images:?}");
}
