//! Dockerfile builds without Docker (docs/repositories.md): each `RUN` runs
//! in a container of the previous snapshot, confined as the workspace is
//! (its user namespace, network namespace, seccomp profile and limits, the
//! upper directory on its volume so a `RUN` cannot write past its disk),
//! and its result is committed as the next snapshot with containerd's
//! Snapshots `Commit`; `COPY` writes the context's files straight into a
//! snapshot. Every step's snapshot is named by a key of everything it
//! depends on (the previous key, the instruction, the environment, the
//! bytes copied; the first key is the base image's digest), so a second
//! build of the same repository finds its steps and runs none.

use super::run::InitLog;
use super::*;
use crate::build::{self as b, Context};
use crate::init::devcontainer::{Build, Feature};
use crate::init::dockerfile::{self, Run, Step as Df};
use crate::spec::As;
use berth_proto::codes::Code;
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

mod copy;

/// The lease holding every build snapshot (a GC root without expiry).
const BUILD_LEASE: &str = "berth-build-cache";
/// The prefix of committed build snapshots.
const BUILD_PREFIX: &str = "berth-build/";

/// What to build: a Dockerfile of the repository or an image, then the
/// configuration's features.
pub(super) struct Recipe<'a> {
    /// The repository (a path in the workspace).
    pub(super) folder: &'a str,
    /// The configuration's directory, relative to the repository.
    pub(super) config_dir: &'a str,
    pub(super) build: Option<&'a Build>,
    /// The image when there is no Dockerfile.
    pub(super) image: &'a str,
    pub(super) features: &'a [Feature],
    /// remoteUser (or containerUser) of the configuration, for features.
    pub(super) remote_user: Option<&'a str>,
}

/// A built image: what the workspace's container is made from.
pub(super) struct Built {
    pub(super) image: String,
    pub(super) chain_id: String,
    pub(super) env: Vec<String>,
    pub(super) user: String,
    pub(super) args: Vec<String>,
    /// Steps found in the cache / steps run.
    pub(super) cached: usize,
    pub(super) ran: usize,
    pub(super) warnings: Vec<String>,
}

/// The image being built, after the instructions so far.
pub(super) struct State {
    pub(super) parent: String,
    pub(super) key: String,
    env: Vec<(String, String)>,
    args: BTreeMap<String, String>,
    pub(super) user: String,
    workdir: String,
    shell: Vec<String>,
    /// Steps found in the cache / steps run.
    pub(super) cached: usize,
    pub(super) ran: usize,
    /// What the build read but does not act on.
    pub(super) warnings: Vec<String>,
}

/// One command run in a container of the image so far.
pub(super) struct Job<'a> {
    pub(super) argv: Vec<String>,
    pub(super) env: Vec<String>,
    /// Who runs it ("" or "root": the workspace's root).
    pub(super) user: &'a str,
    pub(super) workdir: &'a str,
    /// Where it comes from, for errors ("Dockerfile line 3").
    pub(super) at: String,
    /// What it is, for errors ("RUN").
    pub(super) what: &'a str,
    /// A node directory bound read-only at a path for this run only; the
    /// mount point is taken out of the layer.
    pub(super) bind: Option<(&'a Path, &'a str)>,
}

impl State {
    fn from_image(img: &crate::image::Image) -> Self {
        Self {
            parent: img.chain_id.clone(),
            key: b::step_key("", &["FROM", &img.digest]),
            env: img
                .config
                .env
                .iter()
                .filter_map(|e| e.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            args: BTreeMap::new(),
            user: img.config.user.clone(),
            workdir: "/".into(),
            shell: vec!["/bin/sh".into(), "-c".into()],
            cached: 0,
            ran: 0,
            warnings: Vec::new(),
        }
    }

    /// `KEY=value` for a `RUN`: build args first, the environment over them.
    pub(super) fn run_env(&self) -> Vec<String> {
        let mut env: Vec<String> = self
            .args
            .iter()
            .filter(|(k, _)| !self.env.iter().any(|(e, _)| e == *k))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        env.extend(self.env.iter().map(|(k, v)| format!("{k}={v}")));
        env
    }

    /// The snapshot a step of key `key` is committed as.
    pub(super) fn snapshot(key: &str) -> String {
        format!("{BUILD_PREFIX}{key}")
    }

    /// Moves on to the step of key `key`: the image is now its snapshot.
    pub(super) fn advance(&mut self, key: String) {
        self.parent = Self::snapshot(&key);
        self.key = key;
    }

    pub(super) fn set_env(&mut self, k: &str, v: &str) {
        match self.env.iter_mut().find(|(e, _)| e == k) {
            Some(e) => e.1 = v.to_string(),
            None => self.env.push((k.to_string(), v.to_string())),
        }
    }

    /// `path` made absolute against the working directory.
    fn absolute(&self, path: &str) -> String {
        match path.starts_with('/') {
            true => path.to_string(),
            false => format!("{}/{path}", self.workdir.trim_end_matches('/')),
        }
    }
}

/// `a/b/../c` → `a/c`; None when it climbs out of its root.
fn normalize(path: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::ParentDir if !out.pop() => return None,
            _ => {}
        }
    }
    Some(out)
}

fn failed(line: usize, what: impl std::fmt::Display) -> AgentError {
    failed_at(&format!("Dockerfile line {line}"), what)
}

pub(super) fn failed_at(at: &str, what: impl std::fmt::Display) -> AgentError {
    AgentError::init(Code::BuildFailed, format!("{at}: {what}"))
}

impl Manager {
    /// Builds what `recipe` says: the image (from its Dockerfile or as
    /// named), then its features, each step found in the cache or run.
    pub(super) async fn build_recipe(
        &self,
        r: &Record,
        recipe: &Recipe<'_>,
        log: &InitLog,
    ) -> Result<Built> {
        self.inner.ctd.create_lasting_lease(BUILD_LEASE).await?;
        let (mut st, img) = match recipe.build {
            Some(build) => {
                self.build_dockerfile(r, recipe.folder, recipe.config_dir, build, log)
                    .await?
            }
            None => {
                let img = self.inner.images.ensure(recipe.image, None).await?;
                (State::from_image(&img), img)
            }
        };
        self.build_features(r, &mut st, recipe, log).await?;
        log.note(&format!(
            "build: {} steps run, {} from the cache",
            st.ran, st.cached
        ));
        Ok(Built {
            image: format!("{}+build:{}", img.name, &st.key[..16]),
            chain_id: st.parent,
            env: st.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            user: st.user,
            args: init_args(&img.config.entrypoint, &img.config.cmd),
            cached: st.cached,
            ran: st.ran,
            warnings: st.warnings,
        })
    }

    /// Builds `build` of the repository at `folder` (a path in the
    /// workspace) whose configuration is in `config_dir` (relative to it).
    async fn build_dockerfile(
        &self,
        r: &Record,
        folder: &str,
        config_dir: &str,
        build: &Build,
        log: &InitLog,
    ) -> Result<(State, crate::image::Image)> {
        let invalid = |what: String| AgentError::init(Code::DevcontainerInvalid, what);
        let rel = folder
            .strip_prefix("/workspace/")
            .ok_or_else(|| invalid(format!("{folder} is not under /workspace")))?;
        let under = |p: &str, what: &str| {
            normalize(&format!("{config_dir}/{p}"))
                .map(|p| p.to_string_lossy().into_owned())
                .ok_or_else(|| invalid(format!("build.{what} {p:?} leaves the repository")))
        };
        let (dockerfile, context) = (
            under(&build.dockerfile, "dockerfile")?,
            under(&build.context, "context")?,
        );
        let base_dir = self.workspace_root(r);
        let repo = Context::open(&base_dir, rel)
            .map_err(|e| invalid(format!("the repository at {folder}: {e}")))?;
        let text = repo
            .read(&dockerfile)
            .map_err(|e| invalid(format!("build.dockerfile {dockerfile}: {e}")))?;
        let ctx = Context::open(&base_dir, &format!("{rel}/{context}"))
            .map_err(|e| invalid(format!("build.context {context}: {e}")))?;
        let stages = dockerfile::parse(&text, &build.args)
            .map_err(|e| AgentError::init(Code::DockerfileInvalid, e.to_string()))?;
        let chain = dockerfile::chain(&stages, build.target.as_deref())
            .map_err(|e| AgentError::init(Code::DockerfileInvalid, e.to_string()))?;
        let base = &chain[0].base;
        let img = self
            .inner
            .images
            .ensure(base, None)
            .await
            .map_err(|e| failed(1, format!("FROM {base}: {e}")))?;
        log.note(&format!("build: {dockerfile} from {base}"));
        let mut st = State::from_image(&img);
        for stage in chain {
            st.args.clear();
            for (line, step) in &stage.steps {
                let line = *line;
                let key = match step {
                    Df::Env(kvs) => {
                        kvs.iter().for_each(|(k, v)| st.set_env(k, v));
                        continue;
                    }
                    Df::Workdir(w) => {
                        st.workdir = st.absolute(w);
                        continue;
                    }
                    Df::User(u) => {
                        st.user = u.clone();
                        continue;
                    }
                    Df::Shell(s) => {
                        st.shell = s.clone();
                        continue;
                    }
                    Df::Arg(k, v) => {
                        st.args.insert(k.clone(), v.clone().unwrap_or_default());
                        continue;
                    }
                    Df::Label(_) | Df::Expose(_) => continue,
                    Df::Run(run) => {
                        let argv = match run {
                            Run::Shell(s) => [st.shell.clone(), vec![s.clone()]].concat(),
                            Run::Exec(v) => v.clone(),
                        };
                        let json = |v: &Vec<String>| serde_json::to_string(v).unwrap_or_default();
                        let key = b::step_key(
                            &st.key,
                            &[
                                "RUN",
                                &json(&argv),
                                &json(&st.run_env()),
                                &st.user,
                                &st.workdir,
                            ],
                        );
                        let name = State::snapshot(&key);
                        if self.inner.ctd.snapshot_exists(&name).await? {
                            st.cached += 1;
                        } else {
                            log.note(&format!("line {line}: RUN {}", argv.join(" ")));
                            let job = Job {
                                env: st.run_env(),
                                user: &st.user,
                                workdir: &st.workdir,
                                at: format!("Dockerfile line {line}"),
                                what: "RUN",
                                bind: None,
                                argv,
                            };
                            self.build_run(r, &st.parent, &job, &name, log).await?;
                            st.ran += 1;
                        }
                        key
                    }
                    Df::Copy {
                        sources,
                        dest,
                        chown,
                    } => {
                        let mut digests = Vec::new();
                        for s in sources {
                            digests.push(
                                ctx.digest(s)
                                    .map_err(|e| failed(line, format!("COPY {s}: {e}")))?,
                            );
                        }
                        let key = b::step_key(
                            &st.key,
                            &[
                                "COPY",
                                &sources.join("\0"),
                                &digests.join("\0"),
                                &st.absolute(dest),
                                chown.as_deref().unwrap_or(""),
                            ],
                        );
                        let name = State::snapshot(&key);
                        if self.inner.ctd.snapshot_exists(&name).await? {
                            st.cached += 1;
                        } else {
                            log.note(&format!("line {line}: COPY {} {dest}", sources.join(" ")));
                            self.build_copy(
                                &st,
                                &ctx,
                                sources,
                                dest,
                                chown.as_deref(),
                                line,
                                &name,
                            )
                            .await?;
                            st.ran += 1;
                        }
                        key
                    }
                };
                st.advance(key);
            }
        }
        Ok((st, img))
    }

    /// Runs `job` on snapshot `parent` and commits what it wrote as
    /// snapshot `name`.
    pub(super) async fn build_run(
        &self,
        r: &Record,
        parent: &str,
        job: &Job<'_>,
        name: &str,
        log: &InitLog,
    ) -> Result<()> {
        let ctd = &self.inner.ctd;
        let active = format!(
            "berth-build-active-{}-{:08x}",
            r.name,
            rand::random::<u32>()
        );
        let mounts = ctd
            .prepare(Some(BUILD_LEASE), &active, parent, HashMap::new())
            .await?;
        let result = self.run_step(r, job, &active, &mounts, log).await;
        self.settle(&active, name, result).await
    }

    /// Commits the active snapshot `active` as `name` if its step `result`
    /// is a success; removes it when the step or the commit fails.
    pub(super) async fn settle(&self, active: &str, name: &str, result: Result<()>) -> Result<()> {
        let ctd = &self.inner.ctd;
        let committed = match result {
            Ok(()) => ctd.commit(BUILD_LEASE, name, active).await,
            Err(e) => Err(e),
        };
        if committed.is_err() {
            let _ = ctd.remove_snapshot(active).await;
        }
        committed
    }

    async fn run_step(
        &self,
        r: &Record,
        job: &Job<'_>,
        active: &str,
        mounts: &[containerd_client::types::Mount],
        log: &InitLog,
    ) -> Result<()> {
        let ctd = &self.inner.ctd;
        let snap_upper = b::upperdir(mounts)
            .ok_or_else(|| failed_at(&job.at, "the snapshot has no upper directory"))?;
        // Scratch upper and work directories on the volume, owned by the
        // workspace's root: what the RUN writes counts against its disk.
        let scratch = self.inner.volumes.mountpoint(r.parts()).join("build");
        let _ = std::fs::remove_dir_all(&scratch);
        let (upper, work) = (scratch.join("upper"), scratch.join("work"));
        let root = r.userns.host_base;
        for d in [&upper, &work] {
            std::fs::create_dir_all(d).map_err(AgentError::io("mkdir build scratch"))?;
            std::os::unix::fs::chown(d, Some(root), Some(root))
                .map_err(AgentError::io("chown build scratch"))?;
        }
        let rootfs = rootfs::on_volume(mounts.to_vec(), &upper, &work)?;
        let lowers: Vec<PathBuf> = rootfs::lowers(mounts)
            .into_iter()
            .map(PathBuf::from)
            .collect();
        let mut input = self.spec_input(r);
        input.cgroups_path = self.cgroups_path(&format!("{}-build", r.name));
        input.env = job.env.clone();
        // An image build never sees the workspace's secrets: a RUN step
        // could bake them into a layer.
        input.secrets = None;
        let who = match job.user {
            "" | "root" | "0" | "0:0" | "root:root" => As::Root,
            u => {
                let (uid, gid) = b::lookup_user(&lowers, u).ok_or_else(|| {
                    failed_at(&job.at, format!("USER {u}: no such user in the image"))
                })?;
                (input.uid, input.gid) = (uid, gid);
                As::User
            }
        };
        let mut spec = spec::build(&input);
        spec.set_process(Some(spec::process(
            &input,
            &job.argv,
            &[],
            job.workdir,
            None,
            who,
        )));
        if let Some(m) = spec.mounts_mut() {
            m.retain(|m| m.destination() != Path::new("/workspace"));
            if let Some((source, at)) = job.bind {
                m.push(spec::mount(
                    at,
                    "bind",
                    source,
                    &["rbind", "ro", "nosuid", "nodev"],
                ));
            }
        }
        let id = format!("{}-build", r.name);
        let _ = ctd.delete_task(&id).await;
        let _ = ctd.delete_container(&id).await;
        let labels = HashMap::from([("berth.build".to_string(), r.name.clone())]);
        ctd.create_container(&id, &r.image, active, &spec, labels)
            .await?;
        let out = self.init_log_dir().join(format!("{}.build.out", r.name));
        let _ = std::fs::remove_file(&out);
        let ran = async {
            let (rootfs, lowers) = self.mapped_lowers_at(&id, r, rootfs)?;
            let created = ctd.create_task(&id, rootfs, &out.to_string_lossy()).await;
            drop(lowers);
            created?;
            ctd.start(&id, "").await?;
            let limit =
                Duration::from_secs(self.inner.cfg.file.workspace.command_timeout_seconds.into());
            match tokio::time::timeout(limit, ctd.wait(&id, "")).await {
                Ok(code) => code,
                Err(_) => {
                    let _ = ctd.kill(&id, "", 9, true).await;
                    let _ = ctd.wait(&id, "").await;
                    Err(failed_at(
                        &job.at,
                        format!("{} did not finish in {} s", job.what, limit.as_secs()),
                    ))
                }
            }
        }
        .await;
        let _ = ctd.delete_task(&id).await;
        let _ = ctd.delete_container(&id).await;
        let output = std::fs::read(&out).unwrap_or_default();
        let _ = std::fs::remove_file(&out);
        log.write(&output);
        let code = ran?;
        if code != 0 {
            let _ = std::fs::remove_dir_all(&scratch);
            let text = String::from_utf8_lossy(&output);
            return Err(failed_at(
                &job.at,
                format!(
                    "{} exited with code {code}: {}",
                    job.what,
                    crate::init::git::tail(&text, 5)
                ),
            ));
        }
        // A bound directory's mount point is no part of the layer, nor are
        // the directories made for it that the image does not have.
        if let Some((_, at)) = job.bind {
            let mut p = PathBuf::from(at.trim_start_matches('/'));
            let _ = std::fs::remove_dir_all(upper.join(&p));
            while let Some(parent) = p.parent().filter(|p| !p.as_os_str().is_empty()) {
                if in_image(&lowers, parent).is_some()
                    || std::fs::remove_dir(upper.join(parent)).is_err()
                {
                    break;
                }
                p = parent.to_path_buf();
            }
        }
        // What the workspace's root wrote becomes the image's root's, then
        // the layer moves into the snapshot (cp keeps whiteouts, xattrs,
        // links and set-id bits).
        b::shift_ids(&upper, root, r.userns.size).map_err(AgentError::io("shift build ids"))?;
        let copied = tokio::process::Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", upper.display()))
            .arg(&snap_upper)
            .output()
            .await
            .map_err(AgentError::io("cp"))?;
        let _ = std::fs::remove_dir_all(&scratch);
        if !copied.status.success() {
            return Err(failed_at(
                &job.at,
                format!(
                    "committing the layer: {}",
                    String::from_utf8_lossy(&copied.stderr).trim()
                ),
            ));
        }
        Ok(())
    }
}

/// What a path is in the image below: the first layer (top first) that
/// has it decides.
fn in_image(lowers: &[PathBuf], rel: &Path) -> Option<std::fs::Metadata> {
    lowers
        .iter()
        .find_map(|l| std::fs::symlink_metadata(l.join(rel)).ok())
}
