//! A repository's configuration applied to its workspace: devcontainer.json
//! (or, without one, what the repository looks like) read after the clone;
//! the host requirements checked, the user and environment resolved, the
//! image switched when the configuration names another, and the lifecycle
//! commands planned with the step the workspace waits for.

use super::build::Recipe;
use super::run::InitLog;
use super::*;
use crate::init::command::Command;
use crate::init::detect;
use crate::init::devcontainer::{self, DevContainer, Step};
use crate::init::state::{InitState, Phase};
use berth_proto::codes::Code;

impl Manager {
    /// The configuration's plan: reads devcontainer.json (or detects the
    /// project), applies what changes the container and returns the
    /// lifecycle commands with the step the workspace waits for.
    pub(super) async fn configure(
        &self,
        r: &mut Record,
        st: &mut InitState,
        repo: &pb::RepoInit,
        log: &InitLog,
    ) -> Result<Plan> {
        let folder = st.folder.clone();
        // Read on the node from the volume (no exec in the workspace),
        // never through a link the repository holds.
        let repo_dir = self.repo_dir(r, &folder);
        for path in devcontainer::PATHS {
            let Some(text) = repo_dir.as_ref().and_then(|c| c.read(path).ok()) else {
                continue;
            };
            log.note(&format!("configuration: {path}"));
            let d = devcontainer::parse(&text).map_err(|e| {
                let code = match e.code() {
                    "devcontainer_refused" => Code::DevcontainerRefused,
                    _ => Code::DevcontainerInvalid,
                };
                AgentError::init(code, format!("{path}: {e}"))
            })?;
            st.source = path.into();
            return self.apply(r, st, d, log).await;
        }
        // No devcontainer.json: what the repository's files say.
        let listing = repo_dir
            .as_ref()
            .and_then(|c| c.names().ok())
            .unwrap_or_default();
        let files: Vec<&str> = listing.iter().map(String::as_str).collect();
        let found = detect::detect(&files);
        st.source = format!("detected: {}", found.kind);
        let command = match &repo.init_command {
            Some(c) => {
                st.warnings.push(format!(
                    "the detected command was replaced by the request's: {c:?}"
                ));
                c.clone()
            }
            None => found.command.unwrap_or_default().to_string(),
        };
        log.note(&format!(
            "no devcontainer.json: {} project ({})",
            found.kind,
            match command.as_str() {
                "" => "nothing to run".to_string(),
                c => c.to_string(),
            }
        ));
        let steps = match command.trim() {
            "" => vec![],
            c => vec![(Step::OnCreate, Command::Shell(c.to_string()))],
        };
        Ok(Plan {
            steps,
            wait_for: Step::UpdateContent,
        })
    }

    /// Applies a devcontainer.json to the workspace.
    async fn apply(
        &self,
        r: &mut Record,
        st: &mut InitState,
        d: DevContainer,
        log: &InitLog,
    ) -> Result<Plan> {
        self.check_requirements(r, &d)?;
        st.warnings.extend(d.warnings.iter().cloned());
        // Where the repository is.
        if let Some(want) = d.workspace_folder.as_deref() {
            let want = want.trim_end_matches('/');
            let under = want.strip_prefix("/workspace/").is_some_and(|rest| {
                !rest.is_empty() && !rest.split('/').any(|p| p == ".." || p == ".")
            });
            if !under {
                return Err(AgentError::init(
                    Code::DevcontainerRefused,
                    format!("workspaceFolder {want:?}: it must be under /workspace (the workspace's persistent volume)"),
                ));
            }
            if want != st.folder {
                let moved = self
                    .query(
                        &r.name,
                        &[
                            "sh",
                            "-c",
                            "mkdir -p -- \"$(dirname -- \"$2\")\" && mv -T -- \"$1\" \"$2\"",
                            "sh",
                            &st.folder,
                            want,
                        ],
                        false,
                    )
                    .await?;
                if moved.is_none() {
                    return Err(AgentError::init(
                        Code::DevcontainerInvalid,
                        format!("workspaceFolder {want:?}: the repository cannot be moved there"),
                    ));
                }
                log.note(&format!("repository moved to {want}"));
                st.folder = want.to_string();
            }
        }

        // The image first (it resets the environment and the user), then
        // the environment over it, then the workspace restarted once.
        let mut recreate = false;
        if d.build.is_some() || !d.features.is_empty() {
            self.build_image(r, st, &d, log).await?;
            recreate = true;
        } else if let Some(image) = d.image.as_deref() {
            if image != r.image {
                log.note(&format!("image {image}"));
                self.switch_image(r, image).await?;
                recreate = true;
            }
        }
        // Environment: containerEnv for every process, remoteEnv for what
        // runs in it (lifecycle commands, exec, SSH, terminals).
        // remoteEnv may name containerEnv's values: containerEnv first.
        for env in [&d.container_env, &d.remote_env] {
            let vars = Vars {
                folder: st.folder.clone(),
                env: r.process_env.clone(),
            };
            for (k, v) in env {
                let v = vars.substitute(v, &mut st.warnings);
                r.process_env.retain(|e| !e.starts_with(&format!("{k}=")));
                r.process_env.push(format!("{k}={v}"));
            }
        }
        recreate |= !d.container_env.is_empty();
        if recreate {
            log.note("restarting the workspace with its configuration");
            self.recreate(r).await?;
        }
        // The user the workspace's processes run as, looked up in the image
        // the workspace now runs; the repository becomes theirs.
        let user = d.container_user.as_ref().or(d.remote_user.as_ref());
        if let Some(user) = user {
            if let Some((uid, gid)) = self.resolve_user(r, user, st).await? {
                if (uid, gid) != (r.uid, r.gid) {
                    let ids = format!("{uid}:{gid}");
                    self.query(&r.name, &["chown", "-R", &ids, "--", &st.folder], true)
                        .await?;
                    r.uid = uid;
                    r.gid = gid;
                }
            }
        }
        st.ports = d
            .forward_ports
            .iter()
            .map(|p| (*p, d.port_labels.get(p).cloned().unwrap_or_default()))
            .collect();
        for (p, label) in &d.port_labels {
            if !d.forward_ports.contains(p) {
                st.ports.push((*p, label.clone()));
            }
        }
        st.post_start = d.post_start.clone();
        let steps = Step::ALL
            .into_iter()
            .filter_map(|s| d.command(s).map(|c| (s, c.clone())))
            .collect();
        Ok(Plan {
            steps,
            wait_for: d.wait_for,
        })
    }

    /// Builds the configuration's Dockerfile or image with its features (a
    /// step of its own in the init report) and makes the result the
    /// workspace's image.
    async fn build_image(
        &self,
        r: &mut Record,
        st: &mut InitState,
        d: &DevContainer,
        log: &InitLog,
    ) -> Result<()> {
        let t = Instant::now();
        st.step("build").phase = Phase::Running;
        let config_dir = std::path::Path::new(&st.source)
            .parent()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let image = d.image.clone().unwrap_or_else(|| r.image.clone());
        let recipe = Recipe {
            folder: &st.folder,
            config_dir: &config_dir,
            build: d.build.as_ref(),
            image: &image,
            features: &d.features,
            remote_user: d.remote_user.as_deref().or(d.container_user.as_deref()),
        };
        let built = self.build_recipe(r, &recipe, log).await;
        let step = st.step("build");
        step.end(
            ms(t),
            built.as_ref().err().map(|e| (e.code(), e.to_string())),
        );
        let built = built?;
        let from = match &d.build {
            Some(b) => b.dockerfile.clone(),
            None => image.clone(),
        };
        let features = match d.features.len() {
            0 => String::new(),
            1 => " + 1 feature".into(),
            n => format!(" + {n} features"),
        };
        step.command = format!(
            "{from}{features} ({} steps run, {} cached)",
            built.ran, built.cached
        );
        st.warnings.extend(built.warnings.iter().cloned());
        self.adopt(
            r,
            built.image,
            built.chain_id,
            &built.user,
            built.env,
            built.args,
        );
        Ok(())
    }

    /// Makes an image the record's: its top snapshot, its init, its user
    /// (the node default for root or a name) and its environment under the
    /// workspace's own.
    fn adopt(
        &self,
        r: &mut Record,
        image: String,
        chain_id: String,
        user: &str,
        mut env: Vec<String>,
        args: Vec<String>,
    ) {
        let defaults = (
            self.inner.cfg.file.workspace.uid,
            self.inner.cfg.file.workspace.gid,
        );
        (r.uid, r.gid) = resolve_user(user, defaults);
        env.extend(r.env.iter().map(|(k, v)| format!("{k}={v}")));
        r.image = image;
        r.chain_id = chain_id;
        r.args = args;
        r.process_env = env;
    }

    /// Refuses a configuration asking for more than the workspace has.
    fn check_requirements(&self, r: &Record, d: &DevContainer) -> Result<()> {
        let h = d.host_requirements;
        let mut short = Vec::new();
        if let Some(c) = h.cpus {
            if u64::from(c) * 1000 > u64::from(r.cpu_millis) {
                short.push(format!(
                    "{c} CPUs (it has {:.1})",
                    f64::from(r.cpu_millis) / 1000.0
                ));
            }
        }
        if let Some(m) = h.memory_bytes.filter(|m| *m > r.memory_bytes) {
            short.push(format!(
                "{} MiB of memory (it has {})",
                m >> 20,
                r.memory_bytes >> 20
            ));
        }
        if let Some(s) = h.storage_bytes.filter(|s| *s > r.disk_bytes) {
            short.push(format!(
                "{} MiB of storage (it has {})",
                s >> 20,
                r.disk_bytes >> 20
            ));
        }
        if short.is_empty() {
            return Ok(());
        }
        Err(AgentError::init(
            Code::HostRequirementsUnmet,
            format!(
                "hostRequirements ask for {}: create it with a larger tier",
                short.join(", ")
            ),
        ))
    }

    /// The ids of a user named in the configuration, looked up in the
    /// /etc/passwd of the image the workspace now runs (read from its
    /// layers on the node, as a `USER` of a build is); root stays the
    /// workspace's user.
    async fn resolve_user(
        &self,
        r: &Record,
        user: &str,
        st: &mut InitState,
    ) -> Result<Option<(u32, u32)>> {
        let mounts = self.inner.ctd.mounts(&Self::snapshot_key(&r.name)).await?;
        let layers: Vec<std::path::PathBuf> = rootfs::lowers(&mounts)
            .into_iter()
            .map(Into::into)
            .collect();
        let Some((uid, gid)) = crate::build::lookup_user(&layers, user) else {
            return Err(AgentError::init(
                Code::DevcontainerInvalid,
                format!("the user {user:?} does not exist in the image"),
            ));
        };
        if uid == 0 {
            st.warnings.push(format!(
                "user {user:?} is root: the workspace runs as uid {}; root is reached with `berth exec --root`",
                r.uid
            ));
            return Ok(None);
        }
        Ok(Some((uid, gid)))
    }

    /// Points the record at another image (pulled if needed); its user and
    /// environment come from that image.
    async fn switch_image(&self, r: &mut Record, image: &str) -> Result<()> {
        let name = crate::image::Reference::parse(image)
            .map_err(|e| AgentError::init(Code::DevcontainerInvalid, format!("image: {e}")))?
            .to_string();
        self.note_image_use(&name);
        let on = self.progress_to(&r.name, "image", &name);
        let (img, pulled) = self
            .inner
            .images
            .ensure_pulled(image, None, Some(on))
            .await?;
        if pulled {
            self.enforce_cache_soon();
        }
        let args = init_args(&img.config.entrypoint, &img.config.cmd);
        self.adopt(
            r,
            img.name,
            img.chain_id,
            &img.config.user,
            img.config.env,
            args,
        );
        Ok(())
    }
}

/// What a configuration asks to run, and when the workspace is ready.
pub(super) struct Plan {
    pub(super) steps: Vec<(Step, Command)>,
    pub(super) wait_for: Step,
}

/// `${...}` in devcontainer.json values.
struct Vars {
    folder: String,
    env: Vec<String>,
}

impl Vars {
    fn substitute(&self, text: &str, warnings: &mut Vec<String>) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(i) = rest.find("${") {
            out.push_str(&rest[..i]);
            let Some(end) = rest[i..].find('}') else {
                out.push_str(&rest[i..]);
                return out;
            };
            let var = &rest[i + 2..i + end];
            let base = self.folder.rsplit('/').next().unwrap_or("");
            let value = match var.split_once(':') {
                None if var == "containerWorkspaceFolder" => self.folder.clone(),
                None if var == "containerWorkspaceFolderBasename"
                    || var == "localWorkspaceFolderBasename" =>
                {
                    base.to_string()
                }
                Some(("containerEnv", name)) => self
                    .env
                    .iter()
                    .rev()
                    .find_map(|e| e.strip_prefix(&format!("{name}=")))
                    .unwrap_or("")
                    .to_string(),
                _ => {
                    warnings.push(format!(
                        "${{{var}}} is not known on a Berth node; left empty"
                    ));
                    String::new()
                }
            };
            out.push_str(&value);
            rest = &rest[i + end + 1..];
        }
        out.push_str(rest);
        out
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables() {
        let v = Vars {
            folder: "/workspace/api".into(),
            env: vec!["PATH=/usr/bin".into(), "PATH=/bin".into()],
        };
        let mut w = Vec::new();
        assert_eq!(
            v.substitute(
                "${containerEnv:PATH}:${containerWorkspaceFolder}/bin",
                &mut w
            ),
            "/bin:/workspace/api/bin"
        );
        assert_eq!(
            v.substitute("${localWorkspaceFolderBasename}", &mut w),
            "api"
        );
        assert!(w.is_empty());
        assert_eq!(v.substitute("a${localEnv:HOME}b${", &mut w), "ab${");
        assert_eq!(w.len(), 1);
    }
}
