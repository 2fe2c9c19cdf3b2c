//! Paths resolved beneath one directory without a race: every lookup is an
//! openat2(2) with RESOLVE_BENEATH from a descriptor of the root, so `..`
//! out of it, absolute symlinks and symlinks that lead out are refused by
//! the kernel at the moment of use (EXDEV), not checked before it; magic
//! links (`/proc/*/fd/*`) are refused too. Every change is an `*at` call
//! on a parent directory opened that way, so a symlink swapped in between
//! two steps cannot move an operation outside.

use nix::dir::Dir;
use nix::fcntl::{openat2, renameat2, AtFlags, OFlag, OpenHow, RenameFlags, ResolveFlag};
use nix::sys::stat::{fstat, fstatat, mkdirat, FileStat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Most directory levels a recursive delete descends.
const MAX_DEPTH: usize = 256;

/// A directory entry: its name, its own stat and, for a symlink, its target.
pub type Entry = (OsString, FileStat, Option<OsString>);

/// A directory everything is resolved beneath.
#[derive(Debug)]
pub struct Beneath {
    root: OwnedFd,
}

/// The error of a path that leads out of the root.
pub fn outside() -> io::Error {
    io::Error::from_raw_os_error(libc::EXDEV)
}

/// `path` relative to the root, checked lexically first: `/`, `.` and
/// empty parts are dropped, `..` is refused (the kernel refuses the
/// symlinks); "" is the root.
pub fn relative(path: &str) -> io::Result<PathBuf> {
    if path.as_bytes().contains(&0) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "NUL in a path"));
    }
    let mut out = PathBuf::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => return Err(outside()),
        }
    }
    Ok(out)
}

fn dot(rel: &Path) -> &Path {
    if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    }
}

fn how(flags: OFlag, mode: u32) -> OpenHow {
    // openat2 refuses flags O_PATH does not take (openat ignores them).
    let extra = if flags.contains(OFlag::O_PATH) {
        OFlag::O_CLOEXEC
    } else {
        OFlag::O_CLOEXEC | OFlag::O_NOCTTY
    };
    OpenHow::new()
        .flags(flags | extra)
        .mode(Mode::from_bits_truncate(mode))
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS)
}

/// `name` opened beneath `dir`.
fn at(dir: BorrowedFd<'_>, rel: &Path, flags: OFlag, mode: u32) -> io::Result<OwnedFd> {
    Ok(openat2(dir, dot(rel), how(flags, mode))?)
}

/// The kind a stat shows: file, dir, symlink or other.
pub fn kind(st: &FileStat) -> &'static str {
    match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
        SFlag::S_IFREG => "file",
        SFlag::S_IFDIR => "dir",
        SFlag::S_IFLNK => "symlink",
        _ => "other",
    }
}

/// What changes whenever the content may have: device, inode, size,
/// modification and change times (a replace by rename is a new inode).
pub fn etag(st: &FileStat) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for v in [
        st.st_dev as i128,
        st.st_ino as i128,
        st.st_size as i128,
        st.st_mtime as i128,
        st.st_mtime_nsec as i128,
        st.st_ctime as i128,
        st.st_ctime_nsec as i128,
    ] {
        h.update(v.to_le_bytes());
    }
    hex::encode(&h.finalize()[..16])
}

impl Beneath {
    /// Everything under `path` (a directory).
    pub fn open_root(path: &Path) -> io::Result<Self> {
        let root = nix::fcntl::open(
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Self { root })
    }

    /// Opens `rel` (symlinks followed while they stay beneath the root).
    pub fn open(&self, rel: &Path, flags: OFlag, mode: u32) -> io::Result<OwnedFd> {
        at(self.root.as_fd(), rel, flags, mode)
    }

    /// The stat of `rel` itself (a symlink is not followed).
    pub fn lstat(&self, rel: &Path) -> io::Result<FileStat> {
        let fd = self.open(rel, OFlag::O_PATH | OFlag::O_NOFOLLOW, 0)?;
        Ok(fstat(&fd)?)
    }

    /// The parent directory of `rel` and its last name (the root itself
    /// has none). With `create`, missing parents are made (mode 0777 less
    /// the umask).
    pub fn parent(&self, rel: &Path, create: bool) -> io::Result<(OwnedFd, OsString)> {
        let name = rel
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the workspace itself"))?;
        let mut dir = at(
            self.root.as_fd(),
            Path::new("."),
            OFlag::O_PATH | OFlag::O_DIRECTORY,
            0,
        )?;
        for part in rel.parent().unwrap_or(Path::new("")).components() {
            let Component::Normal(part) = part else {
                return Err(outside());
            };
            let flags = OFlag::O_PATH | OFlag::O_DIRECTORY;
            dir = match at(dir.as_fd(), Path::new(part), flags, 0) {
                Err(e) if create && e.raw_os_error() == Some(libc::ENOENT) => {
                    match mkdirat(&dir, part, Mode::from_bits_truncate(0o777)) {
                        Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                    at(dir.as_fd(), Path::new(part), flags, 0)?
                }
                other => other?,
            };
        }
        Ok((dir, name.to_owned()))
    }

    /// The entries of the directory `fd` (an open directory), sorted by
    /// name, each with its own stat and, for a symlink, its target; at
    /// most `max` (then `true`).
    pub fn entries(fd: OwnedFd, max: usize) -> io::Result<(Vec<Entry>, bool)> {
        let look = fd.try_clone()?;
        let mut dir = Dir::from_fd(fd)?;
        let mut out = Vec::new();
        let mut truncated = false;
        for e in dir.iter() {
            let e = e?;
            let name = OsStr::from_bytes(e.file_name().to_bytes());
            if name == "." || name == ".." {
                continue;
            }
            if out.len() == max {
                truncated = true;
                break;
            }
            // Gone since the listing: left out.
            let Ok(st) = fstatat(&look, name, AtFlags::AT_SYMLINK_NOFOLLOW) else {
                continue;
            };
            let target = (kind(&st) == "symlink")
                .then(|| nix::fcntl::readlinkat(&look, name).ok())
                .flatten();
            out.push((name.to_owned(), st, target));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok((out, truncated))
    }

    /// Makes the directory `rel` and any missing parents.
    pub fn mkdir_all(&self, rel: &Path) -> io::Result<()> {
        let (dir, name) = self.parent(rel, true)?;
        match mkdirat(&dir, name.as_os_str(), Mode::from_bits_truncate(0o777)) {
            Ok(()) => Ok(()),
            Err(nix::errno::Errno::EEXIST) => Err(io::Error::from_raw_os_error(libc::EEXIST)),
            Err(e) => Err(e.into()),
        }
    }

    /// Moves `from` to `to`, never over something already there.
    pub fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let (fdir, fname) = self.parent(from, false)?;
        let (tdir, tname) = self.parent(to, true)?;
        renameat2(
            &fdir,
            fname.as_os_str(),
            &tdir,
            tname.as_os_str(),
            RenameFlags::RENAME_NOREPLACE,
        )?;
        Ok(())
    }

    /// Removes `rel`: a file or symlink, an empty directory, or (with
    /// `recursive`) a directory and everything in it.
    pub fn remove(&self, rel: &Path, recursive: bool) -> io::Result<()> {
        let (dir, name) = self.parent(rel, false)?;
        remove_at(dir.as_fd(), &name, recursive, 0)
    }

    /// Opens a new file beside `rel` (a hidden temporary name) for an
    /// atomic replace: its descriptor, parent and name.
    pub fn temporary(&self, rel: &Path, mode: u32) -> io::Result<(File, OwnedFd, OsString)> {
        let (dir, name) = self.parent(rel, true)?;
        let mut tmp = OsString::from(".");
        tmp.push(&name);
        tmp.push(format!(".berth-{:016x}", rand::random::<u64>()));
        let fd = at(
            dir.as_fd(),
            Path::new(&tmp),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL,
            mode,
        )?;
        Ok((File::from(fd), dir, tmp))
    }
}

/// Removes `name` in `dir`, descending into directories with `recursive`
/// (each opened beneath its parent, never through a symlink).
fn remove_at(dir: BorrowedFd<'_>, name: &OsStr, recursive: bool, depth: usize) -> io::Result<()> {
    let st = fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
    if kind(&st) != "dir" {
        unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)?;
        return Ok(());
    }
    if recursive {
        if depth >= MAX_DEPTH {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "directories nest too deep to delete",
            ));
        }
        let sub = at(
            dir,
            Path::new(name),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW,
            0,
        )?;
        let look = sub.try_clone()?;
        let names: Vec<OsString> = Dir::from_fd(sub)?
            .iter()
            .filter_map(|e| e.ok())
            .map(|e| OsStr::from_bytes(e.file_name().to_bytes()).to_owned())
            .filter(|n| n != "." && n != "..")
            .collect();
        for n in names {
            remove_at(look.as_fd(), &n, true, depth + 1)?;
        }
    }
    unlinkat(dir, name, UnlinkatFlags::RemoveDir)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_never_climb() {
        assert_eq!(relative("/a/./b/").unwrap(), PathBuf::from("a/b"));
        assert_eq!(relative("").unwrap(), PathBuf::new());
        assert_eq!(
            relative("a/../../b").unwrap_err().raw_os_error(),
            Some(libc::EXDEV)
        );
        assert!(relative("a\0b").is_err());
    }

    #[test]
    fn symlinks_out_are_refused_and_symlinks_in_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("d")).unwrap();
        std::fs::write(tmp.path().join("secret"), "s").unwrap();
        std::fs::write(root.join("d/f"), "f").unwrap();
        std::os::unix::fs::symlink("../secret", root.join("up")).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("secret"), root.join("abs")).unwrap();
        std::os::unix::fs::symlink("d/f", root.join("in")).unwrap();
        let b = Beneath::open_root(&root).unwrap();
        for bad in ["up", "abs"] {
            let e = b.open(Path::new(bad), OFlag::O_RDONLY, 0).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EXDEV), "{bad}");
        }
        // A write through a parent that is a symlink out is refused too.
        std::os::unix::fs::symlink(tmp.path(), root.join("out")).unwrap();
        let e = b.temporary(Path::new("out/new"), 0o644).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EXDEV));
        assert!(!tmp.path().join("new").exists());
        // The control: a symlink that stays beneath is followed.
        let fd = b.open(Path::new("in"), OFlag::O_RDONLY, 0).unwrap();
        assert_eq!(std::io::read_to_string(File::from(fd)).unwrap(), "f");
        b.remove(Path::new("d"), true).unwrap();
        assert!(!root.join("d").exists());
        assert!(tmp.path().join("secret").exists());
    }
}
