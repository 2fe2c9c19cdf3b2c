//! The pieces of Berth's run-and-commit image builder that touch files
//! (docs/repositories.md, "Dockerfile builds"): the build context read
//! from the workspace's volume without ever following a link the workspace
//! could have planted, files written into a snapshot the same way, the
//! ownership of what a `RUN` wrote shifted from the workspace's id range
//! back to the image's, and the cache keys of steps. The orchestration
//! (snapshots, containers) is `workspace::build`.

use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstatat, Mode, SFlag};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The largest Dockerfile read.
const DOCKERFILE_LIMIT: u64 = 1 << 20;

fn io(e: nix::Error) -> std::io::Error {
    std::io::Error::from_raw_os_error(e as i32)
}

/// Opens `rel` beneath `dir`: no `..` out, no symbolic link anywhere on
/// the way (the workspace owns the files and could swap one in).
fn open_beneath(dir: impl AsFd, rel: &str, flags: OFlag) -> std::io::Result<OwnedFd> {
    let rel = match rel.trim_matches('/') {
        "" => ".",
        r => r,
    };
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
        .mode(Mode::empty())
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        );
    nix::fcntl::openat2(dir, rel, how).map_err(io)
}

/// What a context entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File { size: u64 },
    Link(PathBuf),
}

/// One entry of a build context: its path relative to the source, its
/// permission bits and kind.
#[derive(Debug, Clone)]
pub struct Entry {
    pub rel: PathBuf,
    pub mode: u32,
    pub kind: Kind,
}

/// A build context: a directory of the workspace's volume, held open.
pub struct Context {
    root: OwnedFd,
}

impl Context {
    /// Opens `rel` beneath the volume directory `base` (both trusted by
    /// name only: `rel` may not pass through a link).
    pub fn open(base: &Path, rel: &str) -> std::io::Result<Self> {
        let base = std::fs::File::open(base)?;
        Ok(Self {
            root: open_beneath(&base, rel, OFlag::O_DIRECTORY | OFlag::O_RDONLY)?,
        })
    }

    /// The Dockerfile (or any small file) at `rel`.
    pub fn read(&self, rel: &str) -> std::io::Result<String> {
        let f = std::fs::File::from(open_beneath(&self.root, rel, OFlag::O_RDONLY)?);
        let mut text = String::new();
        f.take(DOCKERFILE_LIMIT).read_to_string(&mut text)?;
        Ok(text)
    }

    /// The names in the directory at the context's root, sorted.
    pub fn names(&self) -> std::io::Result<Vec<String>> {
        use std::os::fd::AsRawFd;
        let mut names: Vec<String> =
            std::fs::read_dir(format!("/proc/self/fd/{}", self.root.as_raw_fd()))?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
        names.sort();
        Ok(names)
    }

    /// The commit checked out in the repository at the context's root:
    /// `.git/HEAD`, the loose ref it names, or that ref in `packed-refs`.
    pub fn head_commit(&self) -> std::io::Result<String> {
        let head = self.read(".git/HEAD")?;
        let Some(r) = head.trim().strip_prefix("ref: ") else {
            return Ok(head.trim().to_string());
        };
        if let Ok(c) = self.read(&format!(".git/{r}")) {
            return Ok(c.trim().to_string());
        }
        let packed = self.read(".git/packed-refs")?;
        packed
            .lines()
            .find_map(|l| l.strip_suffix(r).map(|c| c.trim().to_string()))
            .ok_or_else(|| std::io::Error::other(format!("{r}: no such ref")))
    }

    /// The entries of source `rel` (a file, a link, or a directory and
    /// everything under it, depth first, parents before children).
    pub fn entries(&self, rel: &str) -> std::io::Result<Vec<Entry>> {
        let (parent, name) = match rel.trim_matches('/').rsplit_once('/') {
            Some((p, n)) => (p, n),
            None => ("", rel.trim_matches('/')),
        };
        let mut out = Vec::new();
        if name.is_empty() || name == "." {
            let dir = open_beneath(&self.root, parent, OFlag::O_DIRECTORY | OFlag::O_RDONLY)?;
            out.push(Entry {
                rel: PathBuf::new(),
                mode: 0o755,
                kind: Kind::Dir,
            });
            walk(dir, Path::new(""), &mut out)?;
            return Ok(out);
        }
        let dir = open_beneath(&self.root, parent, OFlag::O_DIRECTORY | OFlag::O_RDONLY)?;
        let mut e = entry(&dir, name, PathBuf::new())?;
        e.rel = PathBuf::new();
        let is_dir = e.kind == Kind::Dir;
        out.push(e);
        if is_dir {
            let sub = open_beneath(&dir, name, OFlag::O_DIRECTORY | OFlag::O_RDONLY)?;
            walk(sub, Path::new(""), &mut out)?;
        }
        Ok(out)
    }

    /// Opens the regular file `entry` of source `source` for reading.
    pub fn open_file(&self, source: &str, entry: &Path) -> std::io::Result<std::fs::File> {
        let source = Path::new(source.trim_matches('/'));
        let rel = match entry.as_os_str().is_empty() {
            true => source.to_path_buf(),
            false => source.join(entry),
        };
        let fd = open_beneath(&self.root, &rel.to_string_lossy(), OFlag::O_RDONLY)?;
        Ok(std::fs::File::from(fd))
    }

    /// A digest of source `rel`: every entry's path, mode, kind and bytes.
    pub fn digest(&self, rel: &str) -> std::io::Result<String> {
        let mut h = Sha256::new();
        for e in self.entries(rel)? {
            h.update(format!("{}\0{:o}\0", e.rel.display(), e.mode));
            match &e.kind {
                Kind::Dir => h.update(b"d"),
                Kind::Link(t) => h.update(format!("l{}", t.display())),
                Kind::File { size } => {
                    h.update(format!("f{size}\0"));
                    let mut f = self.open_file(rel, &e.rel)?;
                    std::io::copy(&mut f, &mut HashWriter(&mut h))?;
                }
            }
            h.update(b"\n");
        }
        Ok(hex::encode(h.finalize()))
    }
}

struct HashWriter<'a>(&'a mut Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn entry(dir: &OwnedFd, name: &str, rel: PathBuf) -> std::io::Result<Entry> {
    let st = fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW).map_err(io)?;
    let fmt = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
    let kind = if fmt == SFlag::S_IFDIR {
        Kind::Dir
    } else if fmt == SFlag::S_IFREG {
        Kind::File {
            size: st.st_size as u64,
        }
    } else if fmt == SFlag::S_IFLNK {
        Kind::Link(nix::fcntl::readlinkat(dir, name).map_err(io)?.into())
    } else {
        return Err(std::io::Error::other(format!(
            "{}: not a file, directory or link",
            rel.join(name).display()
        )));
    };
    Ok(Entry {
        rel: rel.join(name),
        mode: st.st_mode & 0o7777,
        kind,
    })
}

/// The git directory is never part of a context (it changes with every
/// fetch and would make every build a new one).
fn skipped(name: &str) -> bool {
    name == ".git"
}

fn walk(dir: OwnedFd, rel: &Path, out: &mut Vec<Entry>) -> std::io::Result<()> {
    // The names only, through the descriptor already opened (its /proc
    // link names that directory, whatever happens to its path meanwhile).
    use std::os::fd::AsRawFd;
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !skipped(n))
        .collect();
    names.sort();
    for name in names {
        let e = entry(&dir, &name, rel.to_path_buf())?;
        let is_dir = e.kind == Kind::Dir;
        let sub_rel = e.rel.clone();
        out.push(e);
        if is_dir {
            let sub = open_beneath(&dir, &name, OFlag::O_DIRECTORY | OFlag::O_RDONLY)?;
            walk(sub, &sub_rel, out)?;
        }
    }
    Ok(())
}

/// What the image below has at a path: a directory's mode and owner.
pub type Existing<'a> = dyn Fn(&Path) -> Option<(u32, (u32, u32))> + 'a;

/// A directory the builder writes into (a snapshot's upper directory),
/// through descriptors that never follow a link, so an entry copied in
/// earlier cannot redirect a later write out of it.
pub struct Target {
    root: OwnedFd,
}

impl Target {
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        Ok(Self {
            root: std::fs::File::open(dir)?.into(),
        })
    }

    /// Makes directory `rel` and its parents, owned by `owner` with `mode`;
    /// a parent the image already has keeps the image's mode and owner
    /// (`existing`), since the upper directory's attributes are what the
    /// overlay shows.
    pub fn mkdir_p(
        &self,
        rel: &Path,
        mode: u32,
        owner: (u32, u32),
        existing: &Existing<'_>,
    ) -> std::io::Result<()> {
        let mut at = PathBuf::new();
        let parts: Vec<_> = rel.components().collect();
        for (i, c) in parts.iter().enumerate() {
            at.push(c);
            let last = i + 1 == parts.len();
            let (parent, name) = split(&at);
            let dir = open_beneath(&self.root, &parent, OFlag::O_DIRECTORY | OFlag::O_RDONLY)?;
            let (m, o) = match existing(&at) {
                Some(had) if !last => had,
                _ => (if last { mode } else { 0o755 }, owner),
            };
            match nix::sys::stat::mkdirat(&dir, name.as_str(), Mode::from_bits_truncate(m)) {
                Ok(()) => {
                    let fd = open_beneath(&dir, &name, OFlag::O_DIRECTORY | OFlag::O_RDONLY)?;
                    chown_fd(&fd, o)?;
                    nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(m)).map_err(io)?;
                }
                Err(nix::Error::EEXIST) => {
                    // Must be a directory we may enter (not a link).
                    open_beneath(&dir, &name, OFlag::O_DIRECTORY | OFlag::O_RDONLY)?;
                }
                Err(e) => return Err(io(e)),
            }
        }
        Ok(())
    }

    /// Writes file `rel` (its parent exists) from `from`.
    pub fn write_file(
        &self,
        rel: &Path,
        mode: u32,
        owner: (u32, u32),
        from: &mut impl Read,
    ) -> std::io::Result<()> {
        let (parent, name) = split(rel);
        let dir = open_beneath(&self.root, &parent, OFlag::O_DIRECTORY | OFlag::O_RDONLY)?;
        // Replace what an earlier layer or source left there.
        let _ = nix::unistd::unlinkat(&dir, name.as_str(), nix::unistd::UnlinkatFlags::NoRemoveDir);
        let how = OpenHow::new()
            .flags(
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
            )
            .mode(Mode::from_bits_truncate(0o600))
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
        let fd = nix::fcntl::openat2(&dir, name.as_str(), how).map_err(io)?;
        let mut f = std::fs::File::from(fd);
        std::io::copy(from, &mut f)?;
        chown_fd(&f, owner)?;
        nix::sys::stat::fchmod(&f, Mode::from_bits_truncate(mode)).map_err(io)?;
        Ok(())
    }

    /// Makes link `rel` (its parent exists) pointing at `target`.
    pub fn symlink(&self, rel: &Path, target: &Path, owner: (u32, u32)) -> std::io::Result<()> {
        let (parent, name) = split(rel);
        let dir = open_beneath(&self.root, &parent, OFlag::O_DIRECTORY | OFlag::O_RDONLY)?;
        let _ = nix::unistd::unlinkat(&dir, name.as_str(), nix::unistd::UnlinkatFlags::NoRemoveDir);
        nix::unistd::symlinkat(target, &dir, name.as_str()).map_err(io)?;
        nix::unistd::fchownat(
            &dir,
            name.as_str(),
            Some(owner.0.into()),
            Some(owner.1.into()),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(io)
    }
}

fn split(rel: &Path) -> (String, String) {
    let parent = rel
        .parent()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = rel
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    (parent, name)
}

fn chown_fd(fd: &impl AsFd, (uid, gid): (u32, u32)) -> std::io::Result<()> {
    nix::unistd::fchown(fd, Some(uid.into()), Some(gid.into())).map_err(io)
}

/// Shifts the owners of everything under `dir` (never following a link)
/// from node ids `base..base+size` to `0..size`: what a `RUN` wrote as the
/// workspace's root becomes the image's root, so the layer is shared by
/// every workspace (each maps it into its own range). An id outside the
/// range (none should be) becomes 0.
pub fn shift_ids(dir: &Path, base: u32, size: u32) -> std::io::Result<u64> {
    rebase_ids(dir, base, size, 0)
}

/// Moves the owners of everything under `dir` (never following a link)
/// from node ids `from..from+size` to `to..to+size` (a restored backup
/// taken in another id range); an id outside the range becomes `to`.
pub fn rebase_ids(dir: &Path, from: u32, size: u32, to: u32) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let shift = |id: u32| match id.checked_sub(from) {
        Some(i) if i < size => to + i,
        _ => to,
    };
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p)?;
        std::os::unix::fs::lchown(&p, Some(shift(m.uid())), Some(shift(m.gid())))?;
        if !m.file_type().is_symlink() {
            // chown clears set-id bits: put them back.
            std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(m.mode()))?;
        }
        n += 1;
        if m.is_dir() {
            for e in std::fs::read_dir(&p)? {
                stack.push(e?.path());
            }
        }
    }
    Ok(n)
}

/// A step's cache key: the previous key and everything the step's result
/// depends on.
pub fn step_key(prev: &str, parts: &[&str]) -> String {
    let mut h = Sha256::new();
    h.update(b"berth-build-v1\0");
    h.update(prev.as_bytes());
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    hex::encode(h.finalize())
}

/// The upper directory of an active snapshot's mounts.
pub fn upperdir(mounts: &[containerd_client::types::Mount]) -> Option<PathBuf> {
    let m = mounts.first()?;
    match m.r#type.as_str() {
        "bind" => Some(PathBuf::from(&m.source)),
        _ => m
            .options
            .iter()
            .find_map(|o| o.strip_prefix("upperdir="))
            .map(PathBuf::from),
    }
}

/// Looks `user` ("name", "uid", "uid:gid", "name:group") up in the
/// `etc/passwd` of the first of `layers` (top first) that has one.
pub fn lookup_user(layers: &[PathBuf], user: &str) -> Option<(u32, u32)> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = layers
        .iter()
        .find_map(|l| std::fs::read_to_string(l.join("etc/passwd")).ok())
        .unwrap_or_default();
    let (uid, pgid) = match u.parse::<u32>() {
        Ok(uid) => (
            uid,
            passwd
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() > 3 && f[2] == u)
                .and_then(|f| f[3].parse().ok())
                .unwrap_or(uid),
        ),
        Err(_) => passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() > 3 && f[0] == u)
            .and_then(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?,
    };
    let gid = match g {
        None => pgid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => layers
                .iter()
                .find_map(|l| std::fs::read_to_string(l.join("etc/group")).ok())
                .unwrap_or_default()
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() > 2 && f[0] == g)
                .and_then(|f| f[2].parse().ok())?,
        },
    };
    Some((uid, gid))
}

#[cfg(test)]
mod tests;
