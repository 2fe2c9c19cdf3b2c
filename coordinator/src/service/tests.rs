//! The service on its own: a store in a temporary SQLite file, a fake link
//! standing in for the nodes, and a clock the test moves. No QUIC, no CA,
//! no agent: what is tested is the service's own logic (placement,
//! dispatch, answers, liveness). The same paths run for real, over QUIC to
//! real agents, in the berth-tests cluster tests.

use super::*;
use crate::domain::node::{NodeStatus, Registration};
use crate::domain::scheduler::Resources;
use crate::link::{Duplex, LinkError};
use berth_proto::agent::request::Command as C;
use berth_proto::agent::response::Result as R;
use futures::future::BoxFuture;
use std::sync::atomic::{AtomicI64, Ordering};

/// Nodes that answer every command at once, as a healthy agent would, and
/// keep what they were sent.
#[derive(Default)]
struct FakeNodes {
    connected: Mutex<Vec<String>>,
    sent: Mutex<Vec<(String, C)>>,
}

impl FakeNodes {
    fn sent(&self) -> Vec<(String, C)> {
        self.sent.lock().unwrap().clone()
    }
}

fn status(name: &str, generation: u64, state: pb::State) -> R {
    R::Status(pb::WorkspaceStatus {
        name: name.into(),
        state: state as i32,
        generation,
        ip: "10.88.0.2".into(),
        pid: if state == pb::State::Running { 42 } else { 0 },
        ..Default::default()
    })
}

impl NodeLink for FakeNodes {
    fn connected(&self) -> Vec<String> {
        self.connected.lock().unwrap().clone()
    }

    fn is_connected(&self, node: &str) -> bool {
        self.connected.lock().unwrap().iter().any(|n| n == node)
    }

    fn call(
        &self,
        node: &str,
        cmd: C,
        _timeout: Duration,
    ) -> BoxFuture<'_, std::result::Result<R, LinkError>> {
        self.sent.lock().unwrap().push((node.into(), cmd.clone()));
        let answer = match cmd {
            C::Create(c) => {
                let s = c.spec.unwrap_or_default();
                let state = match c.start {
                    true => pb::State::Running,
                    false => pb::State::Created,
                };
                status(&s.name, s.generation, state)
            }
            C::Start(n) => status(&n.name, n.generation, pb::State::Running),
            C::Stop(s) => status(&s.name, s.generation, pb::State::Stopped),
            C::Delete(n) => status(&n.name, n.generation, pb::State::Deleted),
            other => R::Error(pb::Error {
                code: "invalid_request".into(),
                message: format!("the fake does not answer {other:?}"),
            }),
        };
        Box::pin(async move { Ok(answer) })
    }

    fn open(
        &self,
        node: &str,
        _cmd: C,
    ) -> BoxFuture<'_, std::result::Result<(Duplex, R), LinkError>> {
        let node = node.to_string();
        Box::pin(async move { Err(LinkError::NotConnected(node)) })
    }
}

struct Harness {
    svc: Service,
    nodes: Arc<FakeNodes>,
    now: Arc<AtomicI64>,
    events: mpsc::UnboundedSender<LinkEvent>,
    _dir: tempfile::TempDir,
}

const T0: i64 = 1_800_000_000_000;

impl Harness {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("berth.db").display());
        let store = Store::open(&url).await.unwrap();
        let nodes = Arc::new(FakeNodes::default());
        let now = Arc::new(AtomicI64::new(T0));
        let clock = {
            let now = now.clone();
            Arc::new(move || now.load(Ordering::SeqCst)) as Clock
        };
        let svc = Service::new(Parts {
            id: "test".into(),
            store,
            link: nodes.clone(),
            timing: Timing::default(),
            tiers: Tiers::default(),
            default_image: Some("registry.test/base:1".into()),
            ca_fingerprint: "ab".repeat(32),
            clock,
            sealer: crate::secrets::Sealer::new([7; 32]),
            prebuilds: Default::default(),
            backups: Default::default(),
            cost: Default::default(),
            quotas: Default::default(),
        });
        let (events, rx) = mpsc::unbounded_channel();
        tokio::spawn(svc.clone().run(rx));
        Self {
            svc,
            nodes,
            now,
            events,
            _dir: dir,
        }
    }

    fn advance(&self, by: Duration) {
        self.now.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
    }

    /// Joins and registers `node` through the link events, as its agent would.
    async fn join(&self, node: &str) {
        let (token, _) = self.svc.create_join_token("admin", 600, 1).await.unwrap();
        let token = berth_proto::tls::JoinToken::parse(&token).unwrap();
        let (reply, answer) = tokio::sync::oneshot::channel();
        let join = LinkEvent::Join {
            node_id: node.into(),
            token_id: token.id.clone(),
            secret_hash: token.secret_hash(),
            reply,
        };
        self.events.send(join).unwrap();
        answer.await.unwrap().unwrap().unwrap();
        let (reply, answer) = tokio::sync::oneshot::channel();
        let registration = Registration {
            capacity: Resources {
                cpu_millis: 4000,
                memory_bytes: 8 << 30,
                disk_bytes: 100 << 30,
            },
            slots: 10,
            ..Default::default()
        };
        let register = LinkEvent::Register {
            node: node.into(),
            registration,
            reply,
        };
        self.events.send(register).unwrap();
        answer.await.unwrap().unwrap();
        self.nodes.connected.lock().unwrap().push(node.into());
        let registered = LinkEvent::Registered {
            node: node.into(),
            inventory: vec![],
            at_ms: self.svc.now(),
        };
        self.events.send(registered).unwrap();
    }

    /// Waits (10 s at most) until `alice`'s workspace `name` is in `state`.
    async fn wait(&self, name: &str, state: State) -> WorkspaceRow {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let w = self.svc.find("alice", name).await.unwrap();
            if w.state == state {
                return w;
            }
            assert!(
                Instant::now() < deadline,
                "{name} stayed {:?}: {w:?}",
                w.state
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn create(name: &str) -> CreateWorkspace {
    CreateWorkspace {
        name: name.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_workspace_is_placed_created_and_stopped_through_the_link() {
    let h = Harness::new().await;
    // Without a node nothing is sent and the workspace waits, saying why.
    let w = h.svc.create("alice", &create("box")).await.unwrap();
    assert_eq!(w.state, State::Pending);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let w = h.svc.find("alice", "box").await.unwrap();
    assert_eq!(w.state, State::Pending);
    assert!(w.reason.is_some(), "{w:?}");
    assert!(h.nodes.sent().is_empty());

    h.join("n1").await;
    let w = h.wait("box", State::Running).await;
    assert_eq!(w.node.as_deref(), Some("n1"));
    assert_eq!(w.ip.as_deref(), Some("10.88.0.2"));
    let sent = h.nodes.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    let C::Create(c) = &sent[0].1 else {
        panic!("{sent:?}")
    };
    let spec = c.spec.clone().unwrap();
    assert_eq!(
        (spec.name.as_str(), spec.image.as_str(), c.start),
        (w.id.as_str(), "registry.test/base:1", true)
    );
    assert_eq!(spec.hostname, "box");

    // A stop is an intent stored first, then a command with a newer generation.
    let stopping = h
        .svc
        .intent("alice", "box", Event::StopRequested)
        .await
        .unwrap();
    assert!(stopping.generation > w.generation);
    h.wait("box", State::Stopped).await;
    // The workspace's commands (its stop's backup goes out too, at once).
    let commands = || {
        let mut sent = h.nodes.sent();
        sent.retain(|(_, c)| !matches!(c, C::Backup(_)));
        sent
    };
    let sent = commands();
    let C::Stop(s) = &sent.last().unwrap().1 else {
        panic!("{sent:?}")
    };
    assert_eq!(
        (s.name.as_str(), s.generation),
        (w.id.as_str(), stopping.generation)
    );
    // Stopping what is stopped is kept as it is: no new generation, nothing sent.
    let again = h
        .svc
        .intent("alice", "box", Event::StopRequested)
        .await
        .unwrap();
    assert_eq!(again.generation, stopping.generation);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(commands().len(), sent.len());
}

#[tokio::test]
async fn a_silent_node_is_unreachable_then_lost_by_the_clock() {
    let h = Harness::new().await;
    h.join("n1").await;
    h.svc.create("alice", &create("box")).await.unwrap();
    h.wait("box", State::Running).await;
    let timing = h.svc.timing().clone();

    // Control: connected, the node stays ready however time passes.
    h.advance(timing.lost_after * 2);
    h.svc.liveness_once().await.unwrap();
    assert_eq!(h.svc.node("n1").await.unwrap().status, NodeStatus::Ready);

    // Its link drops: silent past the first limit, nothing new goes there...
    h.nodes.connected.lock().unwrap().clear();
    h.advance(timing.unreachable_after + Duration::from_secs(1));
    h.svc.liveness_once().await.unwrap();
    assert_eq!(
        h.svc.node("n1").await.unwrap().status,
        NodeStatus::Unreachable
    );
    assert_eq!(
        h.svc.find("alice", "box").await.unwrap().state,
        State::Running
    );
    // ...past the second, its workspaces are unknown.
    h.advance(timing.lost_after);
    h.svc.liveness_once().await.unwrap();
    assert_eq!(h.svc.node("n1").await.unwrap().status, NodeStatus::Lost);
    assert_eq!(
        h.svc.find("alice", "box").await.unwrap().state,
        State::Unknown
    );
}
