//! A workspace's record, and a create request resolved into one against
//! the tiers: what the user asked for, checked and completed. Pure.

use crate::domain::capacity;
use crate::domain::lifecycle::{self, Desired, State};
use crate::domain::scheduler::Resources;
use crate::domain::tier::{bounds, Tiers};
use crate::domain::validate;
use crate::error::{Error, Result};
use berth_proto::api::{CreateWorkspace, Idle, Init, Repo};
use std::collections::BTreeMap;

/// A workspace as the coordinator keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceRow {
    pub id: String,
    pub name: String,
    pub owner: String,
    pub image: String,
    pub resources: Resources,
    pub pids: u32,
    pub env: BTreeMap<String, String>,
    pub node_selector: BTreeMap<String, String>,
    /// The tier it was created from (empty for rows older than tiers).
    pub tier: String,
    /// What its tier grants beyond the security defaults, fixed at create.
    pub nested_userns: bool,
    pub egress_allow: Vec<String>,
    pub state: State,
    pub desired: Desired,
    pub node: Option<String>,
    pub generation: u64,
    pub version: i64,
    pub reason: Option<String>,
    pub ip: Option<String>,
    pub exit_code: Option<i64>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub state_since_ms: i64,
    /// The repository it is made from.
    pub repo: Option<Repo>,
    /// Its clone and lifecycle steps as its node last reported them.
    pub init: Option<Init>,
    /// The idle detector's verdict as its node last reported it (running
    /// workspaces; kept after an idle stop, to say why).
    pub idle: Option<Idle>,
    /// A keepalive holds it from an idle stop until then (Unix ms; 0: none).
    pub keepalive_until_ms: i64,
    /// Its own idle timeout, within its tier's bound (0: its tier's).
    pub idle_timeout_ms: i64,
    /// The team it belongs to ("" for none): its members see and act on it
    /// by role.
    pub team: String,
}

impl WorkspaceRow {
    /// The lifecycle part of the record.
    pub fn lifecycle(&self) -> lifecycle::Workspace {
        lifecycle::Workspace {
            state: self.state,
            desired: self.desired,
            node: self.node.clone(),
            generation: self.generation,
            reason: self.reason.clone(),
        }
    }

    /// Takes the lifecycle fields of `w`, keeping `state_since_ms` unless the state changed.
    pub fn with_lifecycle(&self, w: &lifecycle::Workspace, now: i64) -> Self {
        let mut next = self.clone();
        if w.state != self.state {
            next.state_since_ms = now;
        }
        next.state = w.state;
        next.desired = w.desired;
        next.node = w.node.clone();
        next.generation = w.generation;
        next.reason = w.reason.clone();
        next.updated_at_ms = now;
        next
    }

    /// What the workspace holds on its node now (see `capacity::held`).
    pub fn held(&self) -> Resources {
        capacity::held(self.state, self.node.as_deref(), self.resources)
    }

    /// Whether the workspace can be reached now or after waking it (a
    /// stopped or starting workspace on a node); `not_running` otherwise.
    pub fn reachable_or_waking(&self) -> Result<()> {
        let wakeable = self.node.is_some()
            && matches!(
                self.state,
                State::Stopped | State::Stopping | State::Scheduled | State::Starting
            );
        if self.state != State::Running && !wakeable {
            return Err(Error::conflict(
                "not_running",
                format!("workspace {} is {}", self.name, self.state.as_str()),
            ));
        }
        Ok(())
    }

    /// The API's view of the workspace.
    pub fn view(&self) -> berth_proto::api::Workspace {
        berth_proto::api::Workspace {
            id: self.id.clone(),
            name: self.name.clone(),
            owner: self.owner.clone(),
            image: self.image.clone(),
            state: self.state,
            desired: self.desired,
            node: self.node.clone(),
            generation: self.generation,
            reason: self.reason.clone(),
            ip: self.ip.clone(),
            exit_code: self.exit_code,
            cpu_millis: self.resources.cpu_millis,
            memory_bytes: self.resources.memory_bytes,
            disk_bytes: self.resources.disk_bytes,
            pids: self.pids,
            env: self.env.clone(),
            node_selector: self.node_selector.clone(),
            tier: self.tier.clone(),
            team: self.team.clone(),
            created_at_ms: self.created_at_ms,
            updated_at_ms: self.updated_at_ms,
            repo: self.repo.clone(),
            init: self.init.clone(),
            progress: None,
            idle: None,
            backup: None,
            usage: None,
        }
    }

    /// The change as the event stream shows it.
    pub fn event(&self) -> berth_proto::api::WorkspaceEvent {
        berth_proto::api::WorkspaceEvent {
            id: self.id.clone(),
            name: self.name.clone(),
            owner: self.owner.clone(),
            state: self.state,
            desired: self.desired,
            node: self.node.clone(),
            generation: self.generation,
            reason: self.reason.clone(),
            at_ms: self.updated_at_ms,
            progress: None,
        }
    }
}

/// What a create is resolved against.
#[derive(Debug, Clone, Copy)]
pub struct Defaults<'a> {
    pub tiers: &'a Tiers,
    /// Image of a workspace created without one (`--default-image`).
    pub image: Option<&'a str>,
}

/// Checks `req` and completes it from its tier into the record of a new,
/// pending workspace of `owner` with id `id`, made at `now`.
pub fn resolve(
    req: &CreateWorkspace,
    owner: &str,
    defaults: Defaults,
    id: String,
    now: i64,
) -> Result<WorkspaceRow> {
    validate::workspace_name(&req.name)?;
    let image = match req
        .image
        .clone()
        .or_else(|| defaults.image.map(String::from))
    {
        Some(i) => i,
        None => {
            return Err(Error::invalid(
                "invalid_image",
                "image is required: this coordinator has no default image (--default-image)",
            ))
        }
    };
    validate::image(&image)?;
    let tiers = defaults.tiers;
    let tier_name = req.tier.as_deref().unwrap_or(tiers.default_name());
    let tier = tiers
        .get(tier_name)
        .ok_or_else(|| Error::invalid("invalid_tier", format!("no tier named {tier_name:?}")))?;
    let cpu = req.cpu_millis.unwrap_or(tier.cpu_millis);
    let mem = req.memory_bytes.unwrap_or(tier.memory_bytes);
    let disk = req.disk_bytes.unwrap_or(tier.disk_bytes);
    let pids = req.pids.unwrap_or(tier.pids);
    // Small floors: a workspace's init starts with a full core whatever its
    // quota, and 16 MiB holds a shell (the agent's own floor is 8 MiB).
    let checks = [
        (
            bounds::CPU_MILLIS.contains(&cpu),
            "cpu_millis must be 10 to 64000",
        ),
        (
            bounds::MEMORY_BYTES.contains(&mem),
            "memory_bytes must be 16 MiB to 256 GiB",
        ),
        (
            bounds::DISK_BYTES.contains(&disk),
            "disk_bytes must be 16 MiB to 1 TiB",
        ),
        (bounds::PIDS.contains(&pids), "pids must be 16 to 65536"),
    ];
    if let Some((_, why)) = checks.iter().find(|(ok, _)| !ok) {
        return Err(Error::invalid("invalid_resources", *why));
    }
    let env = req.env.clone().unwrap_or_default();
    if env.len() > 256 {
        return Err(Error::invalid(
            "invalid_env",
            "at most 256 environment variables",
        ));
    }
    for (k, v) in &env {
        validate::env_key(k)?;
        if v.chars().count() > 32 * 1024 || v.contains('\0') {
            return Err(Error::invalid(
                "invalid_env",
                format!("value of {k} is too long or has a NUL"),
            ));
        }
    }
    let selector = req.node_selector.clone().unwrap_or_default();
    if selector.len() > 64 {
        return Err(Error::invalid("invalid_node_selector", "at most 64 labels"));
    }
    for (k, v) in &selector {
        validate::label(k, v)?;
    }
    if let Some(r) = &req.repo {
        crate::domain::repo::check(r)?;
    }
    let lc = lifecycle::Workspace::new(req.start.unwrap_or(true));
    Ok(WorkspaceRow {
        id,
        name: req.name.clone(),
        owner: owner.to_string(),
        image,
        resources: Resources {
            cpu_millis: u64::from(cpu),
            memory_bytes: mem,
            disk_bytes: disk,
        },
        pids,
        env,
        node_selector: selector,
        tier: tier.name.clone(),
        nested_userns: tier.nested_userns,
        egress_allow: tier.egress_allow.clone(),
        state: lc.state,
        desired: lc.desired,
        node: None,
        generation: lc.generation,
        version: 0,
        reason: None,
        ip: None,
        exit_code: None,
        created_at_ms: now,
        updated_at_ms: now,
        state_since_ms: now,
        repo: req.repo.clone(),
        init: None,
        idle: None,
        keepalive_until_ms: 0,
        idle_timeout_ms: 0,
        team: req.team.clone().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(name: &str) -> CreateWorkspace {
        CreateWorkspace {
            name: name.into(),
            image: Some("127.0.0.1:5000/tiny:latest".into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_request_is_completed_from_its_tier() {
        let tiers = Tiers::default();
        let d = Defaults {
            tiers: &tiers,
            image: None,
        };
        let w = resolve(&req("a"), "bob", d, "w1".into(), 7).unwrap();
        assert_eq!((w.tier.as_str(), w.resources.cpu_millis), ("small", 1000));
        assert_eq!(
            (w.state, w.desired, w.created_at_ms),
            (State::Pending, Desired::Running, 7)
        );
        let mut r = req("b");
        r.tier = Some("large".into());
        r.memory_bytes = Some(1 << 30);
        let w = resolve(&r, "bob", d, "w2".into(), 7).unwrap();
        assert_eq!(
            (w.resources.cpu_millis, w.resources.memory_bytes),
            (4000, 1 << 30)
        );
    }

    #[test]
    fn bad_requests_name_what_is_wrong() {
        let tiers = Tiers::default();
        let d = Defaults {
            tiers: &tiers,
            image: None,
        };
        let code = |r: CreateWorkspace| resolve(&r, "o", d, "w".into(), 0).unwrap_err().code;
        assert_eq!(code(req("Bad!")), "invalid_name");
        let mut r = req("a");
        r.image = None;
        assert_eq!(code(r), "invalid_image");
        let mut r = req("a");
        r.tier = Some("huge".into());
        assert_eq!(code(r), "invalid_tier");
        let mut r = req("a");
        r.cpu_millis = Some(5);
        assert_eq!(code(r), "invalid_resources");
        let mut r = req("a");
        r.env = Some(BTreeMap::from([("1X".into(), "v".into())]));
        assert_eq!(code(r), "invalid_env");
        // A default image stands in for a missing one.
        let mut r = req("a");
        r.image = None;
        let d = Defaults {
            tiers: &tiers,
            image: Some("127.0.0.1:5000/dev:latest"),
        };
        assert_eq!(
            resolve(&r, "o", d, "w".into(), 0).unwrap().image,
            "127.0.0.1:5000/dev:latest"
        );
    }
}
