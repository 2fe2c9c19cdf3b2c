use super::*;
use std::os::unix::fs::MetadataExt;

fn tree() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let ctx = d.path().join("ws/app");
    std::fs::create_dir_all(ctx.join("src/deep")).unwrap();
    std::fs::create_dir_all(ctx.join(".git")).unwrap();
    std::fs::write(ctx.join(".git/HEAD"), "ref").unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM x\n").unwrap();
    std::fs::write(ctx.join("src/a.txt"), "a").unwrap();
    std::fs::write(ctx.join("src/deep/b.txt"), "b").unwrap();
    std::os::unix::fs::symlink("/etc/shadow", ctx.join("src/shadow")).unwrap();
    std::os::unix::fs::symlink("/etc", ctx.join("etc")).unwrap();
    d
}

#[test]
fn a_context_never_follows_a_link_out() {
    let d = tree();
    let ctx = Context::open(&d.path().join("ws"), "app").unwrap();
    assert_eq!(ctx.read("Dockerfile").unwrap(), "FROM x\n");
    // Through a link: refused, even to a file that exists.
    assert!(ctx.read("src/shadow").is_err());
    assert!(ctx.read("etc/passwd").is_err());
    assert!(ctx.read("../../etc/passwd").is_err());
    // A source that is a link is copied as the link, never through it.
    let e = ctx.entries("etc/").unwrap();
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].kind, Kind::Link("/etc".into()));
    // The link itself is an entry, kept as a link.
    let e = ctx.entries("src").unwrap();
    let names: Vec<_> = e.iter().map(|e| e.rel.display().to_string()).collect();
    assert_eq!(names, ["", "a.txt", "deep", "deep/b.txt", "shadow"]);
    assert_eq!(e[4].kind, Kind::Link("/etc/shadow".into()));
    // The context root's entries skip .git.
    let all = ctx.entries(".").unwrap();
    assert!(all.iter().all(|e| !e.rel.starts_with(".git")));
    // A context that is itself a link is refused.
    std::os::unix::fs::symlink(d.path().join("ws/app"), d.path().join("ws/link")).unwrap();
    assert!(Context::open(&d.path().join("ws"), "link").is_err());
}

#[test]
fn digests_change_with_content_and_mode_only() {
    let d = tree();
    let ctx = Context::open(&d.path().join("ws"), "app").unwrap();
    let one = ctx.digest("src").unwrap();
    assert_eq!(one, ctx.digest("src/").unwrap());
    std::fs::write(d.path().join("ws/app/.git/HEAD"), "other").unwrap();
    assert_eq!(one, ctx.digest("src").unwrap());
    std::fs::write(d.path().join("ws/app/src/a.txt"), "A").unwrap();
    let two = ctx.digest("src").unwrap();
    assert_ne!(one, two);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        d.path().join("ws/app/src/a.txt"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    assert_ne!(two, ctx.digest("src").unwrap());
}

#[test]
fn a_target_write_never_follows_a_link_it_holds() {
    let d = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let t = Target::open(d.path()).unwrap();
    let image = |p: &Path| (p == Path::new("opt")).then_some((0o1777, (0, 0)));
    t.mkdir_p(Path::new("opt/app"), 0o750, (3, 3), &image)
        .unwrap();
    assert_eq!(
        std::fs::metadata(d.path().join("opt")).unwrap().mode() & 0o7777,
        0o1777,
        "a parent the image has keeps its mode"
    );
    t.write_file(Path::new("opt/app/x"), 0o640, (7, 8), &mut "x".as_bytes())
        .unwrap();
    let m = std::fs::metadata(d.path().join("opt/app/x")).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o777), (7, 8, 0o640));
    assert_eq!(
        std::fs::metadata(d.path().join("opt/app")).unwrap().mode() & 0o777,
        0o750
    );
    // A link copied in first, then a directory of the same name: refused.
    t.symlink(Path::new("opt/out"), outside.path(), (0, 0))
        .unwrap();
    assert!(t
        .mkdir_p(Path::new("opt/out/evil"), 0o755, (0, 0), &|_| None)
        .is_err());
    assert!(t
        .write_file(
            Path::new("opt/out/evil"),
            0o644,
            (0, 0),
            &mut "x".as_bytes()
        )
        .is_err());
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
}

#[test]
fn ids_shift_back_from_the_range_without_following_links() {
    let d = tempfile::tempdir().unwrap();
    let outside = tempfile::NamedTempFile::new().unwrap();
    let base = 200_000;
    std::fs::create_dir(d.path().join("dir")).unwrap();
    std::fs::write(d.path().join("dir/f"), "f").unwrap();
    std::os::unix::fs::symlink(outside.path(), d.path().join("dir/l")).unwrap();
    for (p, id) in [("dir", base), ("dir/f", base + 1000)] {
        std::os::unix::fs::chown(d.path().join(p), Some(id), Some(id)).unwrap();
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        d.path().join("dir/f"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    std::os::unix::fs::lchown(d.path().join("dir/l"), Some(base + 5), Some(base + 5)).unwrap();
    assert_eq!(shift_ids(d.path(), base, 65536).unwrap(), 4);
    let uid = |p: &str| std::fs::symlink_metadata(d.path().join(p)).unwrap().uid();
    assert_eq!((uid("dir"), uid("dir/f"), uid("dir/l")), (0, 1000, 5));
    assert_eq!(
        std::fs::metadata(d.path().join("dir/f")).unwrap().mode() & 0o7777,
        0o4755
    );
    // The link's target was not touched.
    assert_eq!(std::fs::metadata(outside.path()).unwrap().uid(), 0);
}

#[test]
fn users_resolve_from_the_top_layer_with_a_passwd() {
    let d = tempfile::tempdir().unwrap();
    let (top, low) = (d.path().join("top"), d.path().join("low"));
    std::fs::create_dir_all(low.join("etc")).unwrap();
    std::fs::create_dir_all(&top).unwrap();
    std::fs::write(
        low.join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\ndev:x:1000:1000::/home/dev:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(low.join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
    let layers = [top, low];
    assert_eq!(lookup_user(&layers, "dev"), Some((1000, 1000)));
    assert_eq!(lookup_user(&layers, "1000"), Some((1000, 1000)));
    assert_eq!(lookup_user(&layers, "dev:staff"), Some((1000, 50)));
    assert_eq!(lookup_user(&layers, "1234:5"), Some((1234, 5)));
    assert_eq!(lookup_user(&layers, "nobody-here"), None);
}

#[test]
fn step_keys_chain() {
    let a = step_key("", &["RUN", "x"]);
    assert_eq!(a, step_key("", &["RUN", "x"]));
    assert_ne!(a, step_key("", &["RUN", "y"]));
    assert_ne!(a, step_key("p", &["RUN", "x"]));
    assert_ne!(step_key("", &["ab", ""]), step_key("", &["a", "b"]));
}

#[test]
fn the_head_commit_is_read_from_loose_or_packed_refs() {
    let d = tempfile::tempdir().unwrap();
    let git = d.path().join("r/.git");
    std::fs::create_dir_all(git.join("refs/heads")).unwrap();
    std::fs::write(git.join("HEAD"), "ref: refs/heads/main\n").unwrap();
    std::fs::write(
        git.join("packed-refs"),
        "# pack-refs\nabc123 refs/heads/main\n",
    )
    .unwrap();
    let ctx = Context::open(d.path(), "r").unwrap();
    assert_eq!(ctx.head_commit().unwrap(), "abc123");
    std::fs::write(git.join("refs/heads/main"), "def456\n").unwrap();
    assert_eq!(ctx.head_commit().unwrap(), "def456");
    std::fs::write(git.join("HEAD"), "0123abcd\n").unwrap();
    assert_eq!(ctx.head_commit().unwrap(), "0123abcd");
    assert_eq!(ctx.names().unwrap(), [".git"]);
}
