//! Dev Container Features on the build engine: each feature is fetched
//! from its registry as an OCI artifact, its files written on the
//! workspace's volume (never through a link the tar holds), and its
//! `install.sh` run as the workspace's root with its options as the
//! environment, in a container of the image so far, bound read-only at
//! `/tmp/dev-container-features/<n>` for that run only; the result is the
//! next snapshot, cached by the artifact's digest and the options.

use super::build::{failed_at, Job, Recipe, State};
use super::run::InitLog;
use super::*;
use crate::build::{self as b, Target};
use crate::init::feature::{self, Metadata};
use berth_proto::codes::Code;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// The largest feature layer fetched.
const MAX_FEATURE_BYTES: u64 = 64 << 20;
/// The most files a feature may hold.
const MAX_FEATURE_FILES: usize = 10_000;
/// Where a feature's folder is seen while its install.sh runs.
const FEATURES_AT: &str = "/tmp/dev-container-features";

/// A fetched feature, ready to install.
struct Fetched {
    reference: String,
    digest: String,
    meta: Metadata,
    env: BTreeMap<String, String>,
    layer: Vec<u8>,
}

impl Manager {
    /// Installs the recipe's features on the image in `st`.
    pub(super) async fn build_features(
        &self,
        r: &Record,
        st: &mut State,
        recipe: &Recipe<'_>,
        log: &InitLog,
    ) -> Result<()> {
        if recipe.features.is_empty() {
            return Ok(());
        }
        let mut fetched = Vec::new();
        for f in recipe.features {
            let at = format!("feature {}", f.reference);
            let a = self
                .inner
                .images
                .artifact(&f.reference, feature::LAYER_MEDIA_TYPE, MAX_FEATURE_BYTES)
                .await
                .map_err(|e| failed_at(&at, format!("cannot be fetched: {e}")))?;
            let text = file_of(&a.layer, "devcontainer-feature.json")
                .map_err(|e| failed_at(&at, e))?
                .ok_or_else(|| failed_at(&at, "it has no devcontainer-feature.json"))?;
            let meta = feature::parse(&String::from_utf8_lossy(&text)).map_err(|e| {
                let code = match e.code() {
                    "devcontainer_refused" => Code::DevcontainerRefused,
                    _ => Code::BuildFailed,
                };
                AgentError::init(code, format!("{at}: {e}"))
            })?;
            for w in &meta.warnings {
                log.note(&format!("{at}: {w}"));
                st.warnings.push(format!("{at}: {w}"));
            }
            fetched.push(Fetched {
                reference: f.reference.clone(),
                digest: a.digest,
                env: feature::options_env(&meta, &f.options),
                meta,
                layer: a.layer,
            });
        }
        let deps: Vec<_> = fetched
            .iter()
            .map(|f| {
                (
                    feature::id_of(&f.reference),
                    f.meta.installs_after.clone(),
                    f.meta.depends_on.clone(),
                )
            })
            .collect();
        let order = feature::order(&deps).map_err(|e| failed_at("features", e))?;
        // The image's user (root when it names none) unless the
        // configuration names a remote user.
        let container_user = match st.user.as_str() {
            "" => "root".to_string(),
            u => u.to_string(),
        };
        let remote_user = recipe.remote_user.unwrap_or(&container_user).to_string();
        for (n, i) in order.into_iter().enumerate() {
            let f = &fetched[i];
            // The feature's environment first: its install.sh and every
            // later step see it, as they would under the devcontainers CLI.
            for (k, v) in &f.meta.container_env {
                st.set_env(k, v);
            }
            let mut env = st.run_env();
            env.extend(f.env.iter().map(|(k, v)| format!("{k}={v}")));
            env.push(format!("_REMOTE_USER={remote_user}"));
            env.push(format!("_CONTAINER_USER={container_user}"));
            let json = serde_json::to_string(&env).unwrap_or_default();
            let key = b::step_key(&st.key, &["FEATURE", &f.reference, &f.digest, &json]);
            let name = State::snapshot(&key);
            if self.inner.ctd.snapshot_exists(&name).await? {
                st.cached += 1;
            } else {
                log.note(&format!(
                    "feature {} ({} {})",
                    f.reference, f.meta.id, f.meta.version
                ));
                self.install_feature(r, st, f, n, env, &name, log).await?;
                st.ran += 1;
            }
            st.advance(key);
        }
        Ok(())
    }

    /// Writes the feature's files on the volume and runs its install.sh.
    #[allow(clippy::too_many_arguments)]
    async fn install_feature(
        &self,
        r: &Record,
        st: &State,
        f: &Fetched,
        n: usize,
        env: Vec<String>,
        name: &str,
        log: &InitLog,
    ) -> Result<()> {
        let at = format!("feature {}", f.reference);
        let dir = self.inner.volumes.mountpoint(r.parts()).join("feature");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(AgentError::io("mkdir feature"))?;
        // The workspace's root owns the files (it runs install.sh).
        let root = (r.userns.host_base, r.userns.host_base);
        std::os::unix::fs::chown(&dir, Some(root.0), Some(root.1))
            .map_err(AgentError::io("chown feature"))?;
        let inside = format!("{FEATURES_AT}/{}_{n}", f.meta.id.replace('/', "_"));
        // The users' homes, as the specification's install.sh expects them.
        let script = "home() { awk -F: -v u=\"$1\" '$1==u||$3==u{print $6; exit}' /etc/passwd; }; \
            export _REMOTE_USER_HOME=\"$(home \"$_REMOTE_USER\")\" _CONTAINER_USER_HOME=\"$(home \"$_CONTAINER_USER\")\"; \
            cd \"$1\" && exec ./install.sh";
        let ran = async {
            unpack(&f.layer, &dir, root).map_err(|e| failed_at(&at, e))?;
            let job = Job {
                argv: ["/bin/sh", "-c", script, "sh", &inside]
                    .map(String::from)
                    .into(),
                env,
                user: "root",
                workdir: "/",
                at: at.clone(),
                what: "install.sh",
                bind: Some((&dir, &inside)),
            };
            self.build_run(r, &st.parent, &job, name, log).await
        }
        .await;
        let _ = std::fs::remove_dir_all(&dir);
        ran
    }
}

/// The path of a tar entry, relative and without `..`; None otherwise.
fn entry_path(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out)
}

/// The content of the file `name` at the top of the layer.
fn file_of(layer: &[u8], name: &str) -> std::result::Result<Option<Vec<u8>>, String> {
    let mut tar = tar::Archive::new(layer);
    for e in tar
        .entries()
        .map_err(|e| format!("its layer is not a tar: {e}"))?
    {
        let mut e = e.map_err(|e| format!("its layer is not a tar: {e}"))?;
        let path = e.path().map_err(|e| e.to_string())?.into_owned();
        if entry_path(&path).is_some_and(|p| p == Path::new(name)) {
            let mut v = Vec::new();
            e.read_to_end(&mut v).map_err(|e| e.to_string())?;
            return Ok(Some(v));
        }
    }
    Ok(None)
}

/// Writes the layer's directories and regular files under `dir`, owned by
/// `owner`, through descriptors that never follow a link; links, devices
/// and paths leaving `dir` are refused. install.sh is made executable.
fn unpack(layer: &[u8], dir: &Path, owner: (u32, u32)) -> std::result::Result<(), String> {
    let target = Target::open(dir).map_err(|e| e.to_string())?;
    let none = |_: &Path| None;
    let mut tar = tar::Archive::new(layer);
    let mut n = 0;
    for e in tar
        .entries()
        .map_err(|e| format!("its layer is not a tar: {e}"))?
    {
        let mut e = e.map_err(|e| format!("its layer is not a tar: {e}"))?;
        n += 1;
        if n > MAX_FEATURE_FILES {
            return Err(format!("it holds more than {MAX_FEATURE_FILES} files"));
        }
        let raw = e.path().map_err(|e| e.to_string())?.into_owned();
        let path =
            entry_path(&raw).ok_or_else(|| format!("{}: leaves its folder", raw.display()))?;
        if path.as_os_str().is_empty() {
            continue;
        }
        let mode = e.header().mode().unwrap_or(0o644) & 0o755;
        let io = |e: std::io::Error| format!("{}: {e}", path.display());
        match e.header().entry_type() {
            tar::EntryType::Directory => target
                .mkdir_p(&path, mode | 0o700, owner, &none)
                .map_err(io)?,
            tar::EntryType::Regular => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    target.mkdir_p(parent, 0o755, owner, &none).map_err(io)?;
                }
                let mode = match path == Path::new("install.sh") {
                    true => mode | 0o755,
                    false => mode,
                };
                target.write_file(&path, mode, owner, &mut e).map_err(io)?;
            }
            // A global pax header (git archive writes one) describes the
            // archive, not a file.
            tar::EntryType::XGlobalHeader => {}
            t => return Err(format!("{}: a {t:?} entry is not accepted", path.display())),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
        let mut t = tar::Builder::new(Vec::new());
        for (path, kind, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            if *kind == tar::EntryType::Symlink {
                h.set_link_name("/etc").unwrap();
            }
            // Written raw: the builder itself refuses "..".
            let name = path.as_bytes();
            h.as_old_mut().name[..name.len()].copy_from_slice(name);
            h.set_cksum();
            t.append(&h, *data).unwrap();
        }
        t.into_inner().unwrap()
    }

    #[test]
    fn unpacks_files_and_refuses_escapes() {
        use std::os::unix::fs::PermissionsExt;
        use tar::EntryType::{Directory, Regular, Symlink};
        let me = (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        );
        let ok = layer(&[
            (
                "pax_global_header",
                tar::EntryType::XGlobalHeader,
                b"52 comment=x\n",
            ),
            ("./", Directory, b""),
            ("./devcontainer-feature.json", Regular, b"{\"id\": \"x\"}"),
            ("./install.sh", Regular, b"#!/bin/sh\n"),
            ("lib/util.sh", Regular, b"true\n"),
        ]);
        assert_eq!(
            file_of(&ok, "devcontainer-feature.json").unwrap().unwrap(),
            b"{\"id\": \"x\"}"
        );
        let d = tempfile::tempdir().unwrap();
        unpack(&ok, d.path(), me).unwrap();
        let mode = std::fs::metadata(d.path().join("install.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(
            std::fs::read(d.path().join("lib/util.sh")).unwrap(),
            b"true\n"
        );

        for (bad, why) in [
            (layer(&[("../out", Regular, b"x")]), "leaves"),
            (layer(&[("/etc/x", Regular, b"x")]), "leaves"),
            (layer(&[("etc", Symlink, b"")]), "Symlink"),
        ] {
            let d = tempfile::tempdir().unwrap();
            let e = unpack(&bad, &d.path().join("."), me).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
        assert!(unpack(b"not a tar at all, clearly", d.path(), me).is_err());
    }
}
