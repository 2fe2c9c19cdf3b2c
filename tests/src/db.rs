//! A coordinator store for one test, on SQLite (a file in a temporary
//! directory) or PostgreSQL (Debian's server, started for the test), and
//! the rows and nodes store tests are made of.

use berth_coordinator::domain::lifecycle::{self, Event};
use berth_coordinator::domain::node::Registration;
use berth_coordinator::domain::scheduler::Resources;
use berth_coordinator::domain::workspace::WorkspaceRow;
use berth_coordinator::store::{Decision, Store};
use berth_proto::units::now_ms;
use std::collections::BTreeMap;

/// A database for one test, removed with it.
pub enum Db {
    Sqlite(tempfile::TempDir),
    Postgres(crate::Postgres),
}

impl Db {
    pub fn url(&self) -> String {
        match self {
            Db::Sqlite(d) => format!("sqlite://{}", d.path().join("berth.db").display()),
            Db::Postgres(p) => format!("postgres://berth@127.0.0.1:{}/berth", p.port),
        }
    }
    pub fn sqlite() -> Self {
        Db::Sqlite(tempfile::tempdir().expect("tempdir"))
    }
    pub fn postgres() -> Self {
        let pg = crate::Postgres::start();
        pg.database("berth");
        Db::Postgres(pg)
    }
}

/// Each test body runs once per backend.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let db = $crate::db::Db::sqlite();
                super::$name(&db.url()).await;
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let db = $crate::db::Db::postgres();
                super::$name(&db.url()).await;
            })*
        }
    };
}

pub const MIB: u64 = 1 << 20;

pub fn res(cpu_millis: u64) -> Resources {
    Resources {
        cpu_millis,
        memory_bytes: 64 * MIB,
        disk_bytes: 32 * MIB,
    }
}

pub fn ws(id: &str, owner: &str, name: &str, cpu: u64) -> WorkspaceRow {
    let lc = lifecycle::Workspace::new(true);
    let now = now_ms();
    WorkspaceRow {
        id: id.into(),
        name: name.into(),
        owner: owner.into(),
        image: "reg/tiny:1".into(),
        resources: res(cpu),
        pids: 64,
        env: BTreeMap::new(),
        node_selector: BTreeMap::new(),
        tier: "small".into(),
        nested_userns: false,
        egress_allow: vec![],
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
        repo: None,
        init: None,
        idle: None,
        keepalive_until_ms: 0,
        idle_timeout_ms: 0,
        team: String::new(),
    }
}

/// A joined, registered node with `cpu` millicores and room for `slots`.
pub async fn node(s: &Store, id: &str, cpu: u64, slots: u32) {
    let tok = format!("t{id}");
    s.add_join_token(&tok, "h", "test", now_ms() + 60_000, 1)
        .await
        .unwrap();
    s.join(&tok, "h", id, now_ms()).await.unwrap().unwrap();
    let reg = Registration {
        capacity: Resources {
            cpu_millis: cpu,
            memory_bytes: 1 << 40,
            disk_bytes: 1 << 40,
        },
        slots,
        agent_version: "test".into(),
        ..Default::default()
    };
    s.register_node(id, &reg, now_ms()).await.unwrap();
}

pub fn decision(w: &WorkspaceRow, node: &str) -> Decision {
    let (lc, _) = lifecycle::step(&w.lifecycle(), &Event::Placed(node.into())).unwrap();
    Decision {
        workspace: w.clone(),
        next: w.with_lifecycle(&lc, now_ms()),
        node: node.into(),
    }
}

pub async fn alloc(s: &Store, id: &str) -> (u64, u32) {
    let n = s.node(id).await.unwrap().unwrap();
    (n.allocated.cpu_millis, n.allocated_slots)
}
