//! Creating a workspace: its record, container, snapshot, volume and
//! namespace, all made or all rolled back.

use super::*;
use tracing::field::Empty;

/// Resolves an image's `User` to a non-root uid:gid (numeric only; anything
/// else, root included, falls back to the node default).
pub fn resolve_user(user: &str, default: (u32, u32)) -> (u32, u32) {
    let (u, g) = user.split_once(':').unwrap_or((user, ""));
    match u.parse::<u32>() {
        Ok(uid) if uid != 0 => (uid, g.parse().unwrap_or(uid)),
        _ => default,
    }
}

/// The init command of a workspace: the image's entrypoint + cmd.
pub fn init_args(entrypoint: &[String], cmd: &[String]) -> Vec<String> {
    let args: Vec<String> = entrypoint.iter().chain(cmd).cloned().collect();
    if args.is_empty() {
        vec![
            "/bin/sh".into(),
            "-c".into(),
            "trap 'exit 0' TERM; while :; do sleep 3600 & wait $!; done".into(),
        ]
    } else {
        args
    }
}

impl Manager {
    /// Pulls an image (always asking the registry).
    pub async fn pull(&self, image: &str, creds: Option<Credentials>) -> Result<pb::PullResult> {
        let name = image::Reference::parse(image)?.to_string();
        self.note_image_use(&name);
        let (img, stats) = self.inner.images.pull(image, creds, None).await?;
        self.enforce_cache_soon();
        Ok(pb::PullResult {
            image: img.name,
            digest: img.digest,
            layers_fetched: stats.layers_fetched,
            layers_present: stats.layers_present,
            bytes_fetched: stats.bytes_fetched,
        })
    }

    /// Creates a workspace (and starts it if asked). Idempotent for a repeated
    /// request with the same non-zero generation. Its span carries the
    /// duration of every step, so its last line tells where the time went.
    #[tracing::instrument(name = "create", skip_all, fields(
        workspace = req.spec.as_ref().map_or("", |s| s.name.as_str()),
        slot = Empty, image_ms = Empty, rootfs_ms = Empty, volume_ms = Empty,
        netns_ms = Empty, task_create_ms = Empty, task_start_ms = Empty,
    ))]
    pub async fn create(&self, req: pb::CreateRequest) -> Result<pb::WorkspaceStatus> {
        let spec = req
            .spec
            .ok_or_else(|| AgentError::InvalidRequest("spec missing".into()))?;
        validate::spec(&spec)?;
        let dotfiles = &spec.dotfiles;
        let url_ok = (dotfiles.starts_with("https://") || dotfiles.starts_with("http://"))
            && dotfiles.len() <= 2048
            && !dotfiles
                .chars()
                .any(|c| c.is_control() || c.is_whitespace());
        if !dotfiles.is_empty() && !url_ok {
            return Err(AgentError::InvalidRequest(format!(
                "dotfiles {dotfiles:?}: an http(s) URL"
            )));
        }
        let _guard = self.lock(&spec.name).await;
        if let Some(r) = self.inner.records.get(&spec.name)? {
            if spec.generation != 0 && r.generation == spec.generation && r.phase == Phase::Ready {
                return self.status_of(&r).await;
            }
            return Err(AgentError::AlreadyExists(spec.name));
        }
        // Cheap checks before the pull: a refused request costs nothing.
        self.inner.volumes.check_fits(spec.disk_bytes)?;
        let image_name = image::Reference::parse(&spec.image)?.to_string();
        let t0 = Instant::now();
        let creds = req.auth.map(|a| Credentials {
            username: a.username,
            password: a.password,
        });
        // Noted before the pull: the cache keeps an image used this recently.
        self.note_image_use(&image_name);
        let on = self.progress_to(&spec.name, "image", &image_name);
        let (image, pulled) = self
            .inner
            .images
            .ensure_pulled(&spec.image, creds, Some(on))
            .await?;
        let (prebuild, prebuild_note) = self.held_prebuild(&spec.name, spec.repo.as_ref()).await?;
        // Something came into the cache (a layer with a note was pulled).
        let cache_grew = pulled || (prebuild.is_some() && prebuild_note.is_some());
        step("image_ms", ms(t0));
        let defaults = (
            self.inner.cfg.file.workspace.uid,
            self.inner.cfg.file.workspace.gid,
        );
        let (uid, gid) = resolve_user(&image.config.user, defaults);
        let mut process_env = image.config.env.clone();
        process_env.extend(spec.env.iter().map(|(k, v)| format!("{k}={v}")));
        let key = SlotKey {
            disk_bytes: spec.disk_bytes,
            uid,
            gid,
        };
        let slot = self.inner.prepared.take(key);
        self.inner.refill.notify_one();
        let mut record = {
            let _ipam = self.inner.ipam.lock().await;
            let ip = match &slot {
                Some(s) => s.ip,
                None => self.allocate_ip()?,
            };
            let userns = self.userns_of(ip)?;
            let record = Record {
                name: spec.name.clone(),
                image: image.name.clone(),
                chain_id: image.chain_id.clone(),
                cpu_millis: spec.cpu_millis,
                memory_bytes: spec.memory_bytes,
                pids: spec.pids,
                disk_bytes: spec.disk_bytes,
                env: spec
                    .env
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<BTreeMap<_, _>>(),
                generation: spec.generation,
                phase: Phase::Creating,
                ip,
                userns,
                uid,
                gid,
                process_env,
                args: init_args(&image.config.entrypoint, &image.config.cmd),
                started_at_ms: 0,
                last_exit: None,
                oom_kills: 0,
                slot: slot.as_ref().map(|s| s.id.clone()).unwrap_or_default(),
                nested_userns: spec.nested_userns,
                egress_allow: spec.egress_allow.clone(),
                hostname: spec.hostname.clone(),
                init: None,
                prebuild,
                prebuild_note,
            };
            let put = self.inner.records.put_unsynced(&record);
            if let Some(s) = &slot {
                if put.is_err() {
                    self.drop_slot(s).await;
                }
                // From here on the record (or nobody) holds the address.
                self.inner.prepared.release(s.ip);
            }
            put?;
            record
        };
        if cache_grew {
            // After the record: what it uses is in use.
            self.enforce_cache_soon();
        }
        failpoint::hit("create:after_record");
        // Create and start are one step for the caller: either the workspace
        // is there (and running, if asked) or nothing is left.
        // A repository is cloned from inside the workspace: one created
        // stopped runs for its clone and configuration, then stops.
        // A workspace moved here from another node is filled from its
        // backup instead: its repository was cloned where it came from.
        let restore = req.restore;
        let moved = restore.is_some();
        let dotfiles = spec.dotfiles.clone();
        let repo = spec.repo.clone().filter(|_| restore.is_none());
        let secrets = req.secrets.unwrap_or_default();
        let made = async {
            self.put_secrets(&record, &secrets, crate::secrets::Write::All)?;
            let mounts = self.build(&record).await?;
            if let Some(mut from) = restore {
                from.name.clone_from(&record.name);
                self.restore_moved(&record, from).await?;
            }
            let mut pid = match req.start || repo.is_some() {
                true => Some(self.start_task(&mut record, mounts).await?),
                false => None,
            };
            if !record.egress_allow.is_empty() || self.allow_dirty() {
                self.sync_workspace_allow("").await?;
            }
            let later = match repo {
                Some(repo) => {
                    let later = self.init_repo(&mut record, repo).await?;
                    if req.start {
                        // The configuration may have restarted it.
                        pid = Some(self.status_of(&record).await?.pid);
                        later
                    } else {
                        self.skip_later(&mut record, later);
                        let grace = Duration::from_secs(
                            self.inner.cfg.file.workspace.stop_grace_seconds.into(),
                        );
                        self.stop_task(&record.name, grace).await?;
                        self.inner.secrets.wipe(&record.name);
                        pid = None;
                        Default::default()
                    }
                }
                None => Default::default(),
            };
            // Until this write the record says `creating`: a crash before it
            // rolls back a create nobody was told about.
            record.phase = Phase::Ready;
            self.inner.records.put(&record)?;
            Ok::<_, AgentError>((pid, later))
        };
        let pid = match made.await {
            Ok((pid, later)) => {
                self.run_later(&record.name, later);
                // A moved workspace's home came with its backup.
                if pid.is_some() && !dotfiles.is_empty() && !moved {
                    self.apply_dotfiles(&record.name, dotfiles);
                }
                pid
            }
            Err(e) => {
                tracing::warn!(workspace = %record.name, error = %e, "create failed, rolling back");
                self.teardown(&record).await;
                if !record.egress_allow.is_empty() {
                    let _ = self.sync_workspace_allow(&record.name).await;
                }
                self.inner.records.remove(&record.name)?;
                return Err(e);
            }
        };
        tracing::info!(total_ms = ms(t0), "workspace created");
        failpoint::hit("create:before_reply");
        // What was just done is the status: no need to ask containerd again.
        Ok(match pid {
            Some(pid) => self.status_with(&record, pb::State::Running, pid, None),
            None => self.status_with(&record, pb::State::Created, 0, None),
        })
    }

    /// The lowest address no record and no prepared slot holds; call with
    /// the IPAM lock held.
    pub(super) fn allocate_ip(&self) -> Result<Ipv4Addr> {
        let mut used: HashSet<Ipv4Addr> = self.inner.records.all()?.iter().map(|r| r.ip).collect();
        used.extend(self.inner.prepared.reserved());
        let subnet = self.inner.net.subnet();
        let ranges = self.inner.cfg.userns;
        (0..)
            .map_while(|n| subnet.host(n).filter(|_| ranges.nth(n).is_some()))
            .find(|ip| !used.contains(ip))
            .ok_or(AgentError::AddressesExhausted)
    }

    /// Makes the container of a record and its snapshot; returns the
    /// snapshot's mounts.
    pub(super) async fn make_container(&self, r: &Record) -> Result<Vec<Mount>> {
        let name = &r.name;
        // The container first: as a GC root it holds the snapshot from
        // the moment the snapshot exists, so no lease is needed.
        let spec = spec::build(&self.spec_input(r));
        let labels = HashMap::from([
            (WORKSPACE_LABEL.to_string(), name.clone()),
            (GENERATION_LABEL.to_string(), r.generation.to_string()),
        ]);
        self.inner
            .ctd
            .create_container(name, &r.image, &Self::snapshot_key(name), &spec, labels)
            .await?;
        failpoint::hit("create:after_container");
        let labels = HashMap::from([(WORKSPACE_LABEL.to_string(), name.clone())]);
        let mounts = self
            .inner
            .ctd
            .prepare(None, &Self::snapshot_key(name), &r.chain_id, labels)
            .await?;
        failpoint::hit("create:after_snapshot");
        Ok(mounts)
    }

    /// Makes the container, snapshot, volume and namespace of a new record,
    /// the three independent parts at once; returns the rootfs mounts.
    pub(super) async fn build(&self, r: &Record) -> Result<Vec<Mount>> {
        let name = &r.name;
        let timed = |t: Instant| move |v| (v, ms(t));
        let rootfs = async {
            let t = Instant::now();
            let mounts = self.make_container(r).await?;
            Ok::<_, AgentError>(timed(t)(mounts))
        };
        // A prepared slot already holds the volume and the namespace.
        let own_parts = r.slot.is_empty();
        let volume = async {
            let t = Instant::now();
            if own_parts {
                self.make_volume(name, r.disk_bytes, (r.uid, r.gid), r.userns)
                    .await?;
            }
            failpoint::hit("create:after_volume");
            Ok::<_, AgentError>(ms(t))
        };
        let netns = async {
            let t = Instant::now();
            if own_parts {
                self.inner.net.create(name, r.ip, r.userns).await?;
            }
            failpoint::hit("create:after_netns");
            Ok::<_, AgentError>(ms(t))
        };
        let ((mounts, rootfs_ms), volume_ms, netns_ms) = tokio::try_join!(rootfs, volume, netns)?;
        // /workspace over a prebuild: one overlay mount, whatever its size.
        self.mount_prebuild(r).await?;
        let span = tracing::Span::current();
        span.record("slot", r.slot.as_str());
        for (field, v) in [
            ("rootfs_ms", rootfs_ms),
            ("volume_ms", volume_ms),
            ("netns_ms", netns_ms),
        ] {
            span.record(field, v);
        }
        self.rootfs(r, mounts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_never_root() {
        assert_eq!(resolve_user("", (1000, 1000)), (1000, 1000));
        assert_eq!(resolve_user("0", (1000, 1000)), (1000, 1000));
        assert_eq!(resolve_user("root", (1000, 1000)), (1000, 1000));
        assert_eq!(resolve_user("0:0", (1000, 1000)), (1000, 1000));
        assert_eq!(resolve_user("1001", (1000, 1000)), (1001, 1001));
        assert_eq!(resolve_user("1001:50", (1000, 1000)), (1001, 50));
    }

    #[test]
    fn init_falls_back_to_a_waiting_shell() {
        assert_eq!(
            init_args(&["tini".into()], &["sleep".into()]),
            ["tini", "sleep"]
        );
        assert_eq!(init_args(&[], &[])[0], "/bin/sh");
    }
}
