//! A Berth cluster on one machine: a coordinator process and N agents, each
//! agent in its own network namespace with its own containerd, the
//! namespaces joined by veth to a bridge that carries the coordinator's link
//! address and the registry. Partitions drop the link's UDP port with
//! nftables inside a node's namespace.

use crate::process::{free_port, in_netns, Containerd, Registry};
use berth_proto::api;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Settings of a test cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub agents: usize,
    /// Extra coordinator arguments.
    pub coordinator_args: Vec<String>,
    /// CPU each node offers, in millicores.
    pub node_cpu_millis: u64,
    /// The coordinator's `--cpu-overcommit` (1: what a node offers is what
    /// can be reserved, so tests can count).
    pub cpu_overcommit: f64,
    pub node_max_workspaces: u32,
    /// Prefix of each node's workspace subnet: 24 (252 workspaces) or 22 (1,020).
    pub node_subnet_prefix: u8,
    /// Coordinators sharing the store (more than one needs `postgres`).
    pub coordinators: usize,
    /// Store in a PostgreSQL started for the cluster instead of SQLite.
    pub postgres: bool,
    /// A second, writable registry (its own storage in the cluster's
    /// directory) the nodes may push prebuild layers to.
    pub layer_registry: bool,
    /// The agents' `[idle] sample_seconds`.
    pub idle_sample_seconds: u64,
    /// The cluster's directory (so the nodes' volumes) on a file system
    /// that clones files (`crate::xfs`): backups from snapshots.
    pub reflink: bool,
    /// The API over HTTPS, with a certificate the cluster CA issues for
    /// 127.0.0.1; the harness's requests and the CLI trust that CA only.
    pub https: bool,
    /// The binaries the coordinators and agents start from (another
    /// release's: the upgrade tests); None: this build's.
    pub coordinator_bin: Option<PathBuf>,
    pub agent_bin: Option<PathBuf>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            agents: 1,
            coordinator_args: Vec::new(),
            node_cpu_millis: 4000,
            cpu_overcommit: 1.0,
            node_max_workspaces: 50,
            node_subnet_prefix: 24,
            coordinators: 1,
            postgres: false,
            layer_registry: false,
            idle_sample_seconds: 10,
            reflink: false,
            https: false,
            coordinator_bin: None,
            agent_bin: None,
        }
    }
}

/// One agent of the cluster.
#[derive(Debug)]
pub struct ClusterNode {
    pub id: String,
    /// Its address on the cluster's bridge (its `/metrics` is on port 9464).
    pub ip: String,
    pub netns: String,
    /// Its bridge is `w{tag}`; its nftables table and cgroup parent `{tag}`.
    pub tag: String,
    pub bridge: String,
    pub netns_dir: PathBuf,
    /// The node's own nftables rules, read once it joined.
    pub baseline_rules: Vec<String>,
    pub dir: PathBuf,
    pub containerd: Containerd,
    pub config: PathBuf,
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    /// The binary its agent (re)starts from.
    pub bin: PathBuf,
    agent: Option<Child>,
}

/// One coordinator process of the cluster.
#[derive(Debug)]
pub struct ClusterCoordinator {
    /// Base URL of its API.
    pub api: String,
    pub link_port: u16,
    /// Its data directory (admin token of the first start, SQLite store).
    pub dir: PathBuf,
    /// The binary it (re)starts from.
    pub bin: PathBuf,
    child: Option<Child>,
}

/// A coordinator (or several sharing a PostgreSQL store) and its agents.
pub struct Cluster {
    pub dir: PathBuf,
    pub bridge: String,
    /// The bridge's address: where agents reach the coordinator and registry.
    pub host_ip: String,
    pub registry: Registry,
    /// The writable registry (`ClusterOptions::layer_registry`).
    pub layer_registry: Option<Registry>,
    /// Its storage directory.
    pub layer_registry_dir: PathBuf,
    /// The first coordinator's API (what the helpers below use).
    pub api: String,
    pub link_port: u16,
    pub admin_token: String,
    pub nodes: Vec<ClusterNode>,
    pub coordinators: Vec<ClusterCoordinator>,
    /// The store's URL when it is PostgreSQL.
    pub database_url: Option<String>,
    postgres: Option<crate::Postgres>,
    coordinator_args: Vec<String>,
    http: reqwest::Client,
    seq: u32,
    /// The cluster CA (PEM file) clients trust, when the API is HTTPS.
    pub ca_file: Option<PathBuf>,
}

/// The secrets key file every coordinator of the cluster in `dir` is given,
/// made on first use.
fn secrets_key(dir: &std::path::Path) -> String {
    let path = dir.join("secrets.key");
    if !path.exists() {
        let mut key = [0u8; 32];
        std::io::Read::read_exact(
            &mut std::fs::File::open("/dev/urandom").expect("open /dev/urandom"),
            &mut key,
        )
        .expect("read /dev/urandom");
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        std::fs::write(&path, hex).expect("write the secrets key");
    }
    path.display().to_string()
}

/// Makes bridge `bridge` with the first free 10.252.K.1/24 from `start` on.
/// Tests run in parallel processes: the choice and the address are made
/// under a lock on a file all of them share, so no two bridges get the same
/// subnet (which would route one cluster's packets into another's).
fn claim_subnet(bridge: &str, start: u32) -> u32 {
    let file = std::fs::File::create("/tmp/berth-test-subnets.lock").expect("open the subnet lock");
    let _lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("lock the subnet lock");
    let out = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show"])
        .output()
        .expect("ip addr show");
    let used = String::from_utf8_lossy(&out.stdout).into_owned();
    let k = (0..250)
        .map(|i| (start + i) % 250)
        .find(|k| !used.contains(&format!(" 10.252.{k}.")))
        .expect("a free 10.252.K.0/24 for the test bridge");
    run(&format!(
        "ip link add {bridge} type bridge && ip addr add 10.252.{k}.1/24 dev {bridge} && ip link set {bridge} up"
    ));
    k
}

fn run(cmd: &str) {
    let (ok, _, err) = crate::sh(cmd);
    assert!(ok, "{cmd}: {err}");
}

impl Cluster {
    /// Starts the bridge, registry, coordinator and `opts.agents` joined agents.
    pub async fn start(opts: ClusterOptions) -> Self {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let id = format!("{}{seq}", pid % 100_000);
        let root = if opts.reflink {
            crate::xfs::pool()
        } else {
            PathBuf::from("/tmp")
        };
        let dir = root.join(format!("bc{id}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir cluster dir");
        let bridge = format!("bc{id}");
        let k = claim_subnet(&bridge, (pid.wrapping_mul(4).wrapping_add(seq)) % 250);
        let host_ip = format!("10.252.{k}.1");
        let storage = crate::images(&["tiny"]);
        let registry = Registry::start_on(&host_ip, &storage, "", &dir);
        let layer_registry_dir = dir.join("layer-registry");
        let layer_registry = opts.layer_registry.then(|| {
            std::fs::create_dir_all(&layer_registry_dir).expect("mkdir the layer registry");
            Registry::start_writable_on(&host_ip, &layer_registry_dir, &dir)
        });
        assert!(
            opts.coordinators == 1 || opts.postgres,
            "coordinators share a store only on PostgreSQL"
        );
        let (postgres, database_url) = if opts.postgres {
            let pg = crate::Postgres::start();
            let url = pg.database("berth");
            (Some(pg), Some(url))
        } else {
            (None, None)
        };
        let coordinators: Vec<ClusterCoordinator> = (0..opts.coordinators.max(1))
            .map(|i| ClusterCoordinator {
                api: format!(
                    "{}://127.0.0.1:{}",
                    if opts.https { "https" } else { "http" },
                    free_port()
                ),
                link_port: free_port(),
                bin: opts
                    .coordinator_bin
                    .clone()
                    .unwrap_or_else(crate::coordinator_bin),
                dir: dir.join(if i == 0 {
                    "coord".to_string()
                } else {
                    format!("coord{i}")
                }),
                child: None,
            })
            .collect();
        let mut c = Self {
            dir: dir.clone(),
            bridge,
            host_ip,
            registry,
            layer_registry,
            layer_registry_dir,
            api: coordinators[0].api.clone(),
            link_port: coordinators[0].link_port,
            admin_token: String::new(),
            nodes: Vec::new(),
            coordinators,
            database_url,
            postgres,
            coordinator_args: [
                vec![
                    "--cpu-overcommit".to_string(),
                    opts.cpu_overcommit.to_string(),
                ],
                opts.coordinator_args.clone(),
                match opts.https {
                    true => vec!["--tls-name".to_string(), "127.0.0.1".to_string()],
                    false => vec![],
                },
            ]
            .concat(),
            http: reqwest::Client::new(),
            seq: k,
            ca_file: None,
        };
        // The first start makes the CA and the admin token; the others find them.
        for i in 0..c.coordinators.len() {
            c.start_coordinator_at(i);
        }
        if opts.https {
            let ca = dir.join("coord/ca.pem");
            let pem = std::fs::read(&ca).expect("the cluster CA");
            c.http = reqwest::Client::builder()
                .tls_built_in_root_certs(false)
                .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA PEM"))
                .build()
                .expect("HTTPS client");
            c.ca_file = Some(ca);
        }
        c.admin_token = std::fs::read_to_string(dir.join("coord/admin.token"))
            .expect("admin token")
            .trim()
            .to_string();
        for i in 0..opts.agents {
            c.add_node(i, &opts).await;
        }
        c
    }

    /// The `tiny` image as agents see it.
    pub fn tiny(&self) -> String {
        format!("{}/tiny:latest", self.registry.addr)
    }

    /// (Re)starts the (first) coordinator and waits for its API.
    pub fn start_coordinator(&mut self) {
        self.start_coordinator_at(0);
    }

    /// (Re)starts coordinator `i` and waits for its API.
    pub fn start_coordinator_at(&mut self, i: usize) {
        let host_ip = self.host_ip.clone();
        let database = self.database_url.clone();
        let args = self.coordinator_args.clone();
        let key = secrets_key(&self.dir);
        let co = &mut self.coordinators[i];
        assert!(co.child.is_none());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("coordinator{i}.log")))
            .expect("coordinator log");
        let api = co
            .api
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .to_string();
        let mut cmd = std::process::Command::new(&co.bin);
        cmd.args(["--data-dir", &co.dir.display().to_string()])
            // Coordinators sharing a store share its secrets key.
            .args(["--secrets-key-file", &key])
            .args(["--api", &api])
            .args(["--link", &format!("{host_ip}:{}", co.link_port)])
            .args(["--id", &format!("c{i}")])
            .args(["--heartbeat", "300ms", "--unreachable-after", "2s"]);
        // A test's own --lost-after (in its coordinator arguments) wins.
        if !args.iter().any(|a| a == "--lost-after") {
            cmd.args(["--lost-after", "6s"]);
        }
        // Backups stay in the cluster's directory (not the machine's
        // /var/lib/berth), unless the test says where.
        if !args.iter().any(|a| a == "--backup-repository") {
            let repo = self.dir.join("backups");
            cmd.args(["--backup-repository", &repo.display().to_string()]);
            // Deletes at once, as clusters that do not test backups want
            // (their stores may be broken on purpose); a backup cluster
            // (`crate::backups`) names its repository and gets the
            // product's default: a delete waits for the final backup.
            if !args.iter().any(|a| a == "--backup-before-delete") {
                cmd.args(["--backup-before-delete", "false"]);
            }
        }
        if let Some(url) = &database {
            cmd.args(["--database", url]);
        }
        let child = cmd
            .args(&args)
            .env("BERTH_LOG", "info,berth_coordinator=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn berth-coordinator");
        co.child = Some(child);
        let start = Instant::now();
        while std::net::TcpStream::connect(&api).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "coordinator {i} not up:\n{}",
                self.coordinator_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Extra arguments of every coordinator started from now on.
    pub fn set_coordinator_args(&mut self, args: Vec<String>) {
        self.coordinator_args = args;
    }

    /// The process id of the (first) coordinator, while it runs.
    pub fn coordinator_pid(&self) -> Option<u32> {
        self.coordinators[0].child.as_ref().map(Child::id)
    }

    /// `kill -9` of the (first) coordinator.
    pub fn kill_coordinator(&mut self) {
        self.kill_coordinator_at(0);
    }

    /// SIGTERM to coordinator `i`, as an orchestrator stops it; waits
    /// (20 s at most) until it exited.
    pub fn stop_coordinator_at(&mut self, i: usize) {
        if let Some(mut c) = self.coordinators[i].child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let start = Instant::now();
            while c.try_wait().ok().flatten().is_none() {
                if start.elapsed() > Duration::from_secs(20) {
                    let _ = c.kill();
                    panic!("coordinator {i} did not stop in 20 s after SIGTERM");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// `kill -9` of coordinator `i`.
    pub fn kill_coordinator_at(&mut self, i: usize) {
        if let Some(mut c) = self.coordinators[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The logs of every coordinator, one after the other.
    pub fn coordinator_log(&self) -> String {
        (0..self.coordinators.len())
            .map(|i| {
                let log = std::fs::read_to_string(self.dir.join(format!("coordinator{i}.log")))
                    .unwrap_or_default();
                if self.coordinators.len() == 1 {
                    log
                } else {
                    format!("=== coordinator c{i} ===\n{log}")
                }
            })
            .collect()
    }

    /// The link addresses agents are given, comma-separated.
    fn link_addrs(&self) -> String {
        self.coordinators
            .iter()
            .map(|c| format!("{}:{}", self.host_ip, c.link_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Makes node `i`'s network namespace, `<bridge>-n<i>`, with its eth0
    /// on the cluster's bridge at 10.252.K.(10+i); returns (name, address).
    /// The cluster removes it when it ends.
    pub fn wire_netns(&self, i: usize) -> (String, String) {
        let netns = format!("{}-n{i}", self.bridge);
        let veth = format!("{}v{i}", self.bridge);
        let ip = format!("10.252.{}.{}", self.seq, 10 + i);
        run(&format!(
            "ip netns add {netns} && ip link add {veth} type veth peer name eth0 netns {netns} && \
             ip link set {veth} master {br} up && \
             ip -n {netns} addr add {ip}/24 dev eth0 && ip -n {netns} link set eth0 up && \
             ip -n {netns} link set lo up && ip -n {netns} route add default via {host}",
            br = self.bridge,
            host = self.host_ip
        ));
        (netns, ip)
    }

    async fn add_node(&mut self, i: usize, opts: &ClusterOptions) {
        let id = format!("n{i}");
        let (netns, ip) = self.wire_netns(i);
        let dir = self.dir.join(&id);
        let containerd = Containerd::start_in(&dir.join("containerd"), Some(&netns));
        let state_dir = dir.join("agent");
        let config = dir.join("agent.toml");
        let tag = format!("{}{i}", self.bridge);
        std::fs::write(
            &config,
            format!(
                "state_dir = \"{state}\"\n\
                 [containerd]\nsocket = \"{sock}\"\nrunc_root = \"{runc}\"\n\
                 [network]\nbridge = \"w{tag}\"\nsubnet = \"{subnet}\"\nnft_table = \"{tag}\"\nnetns_dir = \"{netns_dir}\"\n\
                 [cgroup]\nparent = \"{tag}\"\n\
                 [workspace]\nstop_grace_seconds = 2\n\
                 [idle]\nsample_seconds = {sample}\n\
                 [coordinator]\naddress = \"{links}\"\nreconnect_max_ms = 2000\n\
                 [node]\nid = \"{id}\"\ncpu_millis = {cpu}\nmemory_bytes = {mem}\ndisk_bytes = {disk}\nmax_workspaces = {slots}\n\
                 [metrics]\nlisten = \"{ip}:9464\"\n\
                 [[registry]]\nhost = \"{registry}\"\ninsecure = true\n{layers}",
                state = state_dir.display(),
                sock = containerd.socket.display(),
                runc = dir.join("runc").display(),
                subnet = {
                    let k = (self.seq * 8 + i as u32) % 256;
                    match opts.node_subnet_prefix {
                        22 => format!("10.{}.{}.0/22", 240 + k / 64, (k % 64) * 4),
                        _ => format!("10.253.{k}.0/24"),
                    }
                },
                netns_dir = dir.join("netns").display(),
                links = self.link_addrs(),
                cpu = opts.node_cpu_millis,
                sample = opts.idle_sample_seconds,
                mem = 16u64 << 30,
                disk = 64u64 << 30,
                slots = opts.node_max_workspaces,
                registry = self.registry.addr,
                layers = self.layer_registry.as_ref().map_or(String::new(), |r| format!(
                    "[[registry]]\nhost = \"{}\"\ninsecure = true\n",
                    r.addr
                )),
            ),
        )
        .expect("write agent config");
        let socket = state_dir.join("agent.sock");
        let mut node = ClusterNode {
            id,
            ip,
            netns,
            bridge: format!("w{tag}"),
            netns_dir: dir.join("netns"),
            tag,
            baseline_rules: Vec::new(),
            dir,
            containerd,
            config,
            state_dir,
            socket,
            bin: opts.agent_bin.clone().unwrap_or_else(crate::agent_bin),
            agent: None,
        };
        let token = self.join_token(3600).await;
        node.start_agent(Some(&token));
        self.nodes.push(node);
        let want = self.nodes.len();
        let ok = crate::eventually(Duration::from_secs(30), || async {
            let nodes = self.get("/v1/nodes").await.1;
            let ready = nodes
                .as_array()?
                .iter()
                .filter(|n| n["status"] == "ready")
                .count();
            (ready >= want).then_some(())
        })
        .await;
        assert!(
            ok.is_some(),
            "node {i} not ready:\n{}\n{}",
            self.nodes[i].agent_log(),
            self.coordinator_log()
        );
        let n = &self.nodes[i];
        let rules = crate::clean::nft_rules_in(&n.parts());
        assert!(
            !rules.is_empty(),
            "node {i} has no nftables rules to compare with"
        );
        self.nodes[i].baseline_rules = rules;
    }

    /// Ends a test: deletes every workspace left through the API (as their
    /// owners would), then checks every node against its baseline (no
    /// container, task, snapshot, shim, netns, veth, mount or cgroup of a
    /// workspace left; only whole prepared slots; its own nftables rules).
    pub async fn finish(self) {
        let api = self
            .coordinators
            .iter()
            .find(|co| co.child.is_some())
            .map(|co| co.api.clone())
            .expect("a coordinator runs at the end of the test");
        let alive = |l: Vec<api::Workspace>| -> Vec<api::Workspace> {
            l.into_iter()
                .filter(|w| w.state != api::State::Deleted)
                .collect()
        };
        for w in alive(self.workspaces_at(&api).await) {
            let (name, owner) = (&w.name, &w.owner);
            let req = self
                .http
                .delete(format!("{api}/v1/workspaces/{name}?owner={owner}"));
            let (s, e) = self.send(req, &self.admin_token).await;
            assert!(s == 202 || s == 404, "delete {owner}/{name}: {s} {e}");
        }
        let gone = crate::eventually(Duration::from_secs(60), || async {
            alive(self.workspaces_at(&api).await)
                .is_empty()
                .then_some(())
        })
        .await;
        assert!(
            gone.is_some(),
            "workspaces not deleted: {}",
            self.get_at(&api, "/v1/workspaces?owner=*").await.1
        );
        for n in &self.nodes {
            crate::clean::assert_parts_clean(&n.parts(), &n.baseline_rules);
        }
    }

    /// A fresh join token from the API.
    pub async fn join_token(&self, ttl_seconds: u64) -> String {
        let (status, body) = self
            .post("/v1/join-tokens", json!({"ttl_seconds": ttl_seconds}))
            .await;
        assert_eq!(status, 201, "{body}");
        body["token"].as_str().expect("token").to_string()
    }

    /// The link address agents dial.
    pub fn link_addr(&self) -> String {
        format!("{}:{}", self.host_ip, self.link_port)
    }

    async fn send(&self, req: reqwest::RequestBuilder, token: &str) -> (u16, Value) {
        let r = req.bearer_auth(token).send().await.expect("API request");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// GET on another coordinator's API (base URL `api`) as the admin.
    pub async fn get_at(&self, api: &str, path: &str) -> (u16, Value) {
        self.send(self.http.get(format!("{api}{path}")), &self.admin_token)
            .await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.get_as(path, &self.admin_token).await
    }
    pub async fn get_as(&self, path: &str, token: &str) -> (u16, Value) {
        self.send(self.http.get(format!("{}{path}", self.api)), token)
            .await
    }
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.post_as(path, body, &self.admin_token).await
    }
    /// A WebSocket request for `path` on the API, as the admin (bearer token).
    pub fn ws_request(
        &self,
        path: &str,
    ) -> tokio_tungstenite::tungstenite::handshake::client::Request {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = format!("{}{path}", self.api.replace("http://", "ws://"));
        let mut req = url.into_client_request().expect("WebSocket URL");
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {}", self.admin_token)
                .parse()
                .expect("header"),
        );
        req
    }

    /// Any method with a JSON body, as the admin.
    pub async fn send_json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> (u16, Value) {
        self.send(
            self.http
                .request(method, format!("{}{path}", self.api))
                .json(&body),
            &self.admin_token,
        )
        .await
    }
    /// `method` (e.g. "PUT") with a JSON body as the holder of `token`.
    pub async fn send_json_as(
        &self,
        method: &str,
        path: &str,
        body: Value,
        token: &str,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
        self.send(
            self.http
                .request(method, format!("{}{path}", self.api))
                .json(&body),
            token,
        )
        .await
    }
    /// A new member's API token for `user`, made through the CLI as an admin would.
    pub async fn member_token(&self, user: &str) -> String {
        let (code, out, err) = self
            .berth(
                &self.admin_token,
                &["admin", "token", "create", "--user", user],
            )
            .await;
        assert_eq!(code, 0, "{err}");
        out.trim().to_string()
    }
    pub async fn delete_as(&self, path: &str, token: &str) -> (u16, Value) {
        self.send(self.http.delete(format!("{}{path}", self.api)), token)
            .await
    }
    pub async fn post_as(&self, path: &str, body: Value, token: &str) -> (u16, Value) {
        self.send(
            self.http.post(format!("{}{path}", self.api)).json(&body),
            token,
        )
        .await
    }
    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.send(
            self.http.delete(format!("{}{path}", self.api)),
            &self.admin_token,
        )
        .await
    }

    /// Runs the `berth` CLI against this coordinator with `token` (none when
    /// empty) and a private HOME; returns (exit code, stdout, stderr).
    pub async fn berth(&self, token: &str, args: &[&str]) -> (i32, String, String) {
        self.berth_with_input(token, args, None).await
    }

    /// `berth` with `input` on its standard input (none: /dev/null).
    pub async fn berth_with_input(
        &self,
        token: &str,
        args: &[&str],
        input: Option<&[u8]>,
    ) -> (i32, String, String) {
        use tokio::io::AsyncWriteExt;
        let home = self.dir.join("home");
        let mut cmd = tokio::process::Command::new(crate::cli_bin());
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &home)
            .env("BERTH_URL", &self.api)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(match input {
                Some(_) => Stdio::piped(),
                None => Stdio::null(),
            });
        if !token.is_empty() {
            cmd.env("BERTH_TOKEN", token);
        }
        if let Some(ca) = &self.ca_file {
            cmd.env("BERTH_CA_FILE", ca);
        }
        let mut child = cmd.spawn().expect("run berth");
        if let (Some(bytes), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin.write_all(bytes).await.expect("write berth's input");
        }
        let out = child.wait_with_output().await.expect("run berth");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Starts `berth port-forward WS PAIRS… --json` as the admin; returns the
    /// process (killed on drop) and the local address of each pair, in order.
    pub async fn port_forward(
        &self,
        ws: &str,
        pairs: &[&str],
    ) -> (tokio::process::Child, Vec<String>) {
        use tokio::io::AsyncBufReadExt;
        let mut cmd = tokio::process::Command::new(crate::cli_bin());
        if let Some(ca) = &self.ca_file {
            cmd.env("BERTH_CA_FILE", ca);
        }
        let mut child = cmd
            .arg("port-forward")
            .arg(ws)
            .args(pairs)
            .arg("--json")
            .env("BERTH_URL", &self.api)
            .env("BERTH_TOKEN", &self.admin_token)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn berth port-forward");
        let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut local = Vec::new();
        for _ in pairs {
            let line = lines
                .next_line()
                .await
                .expect("read port-forward")
                .expect("a forwarding line per pair");
            let v: Value = serde_json::from_str(&line).expect("JSON forwarding line");
            local.push(v["local"].as_str().expect("local address").to_string());
        }
        (child, local)
    }

    /// Every user's workspaces, as the shared REST type (the answer must
    /// read as `berth_proto::api::Workspace`).
    pub async fn workspaces_at(&self, api: &str) -> Vec<api::Workspace> {
        let (s, all) = self.get_at(api, "/v1/workspaces?owner=*").await;
        assert_eq!(s, 200, "{all}");
        serde_json::from_value(all.clone()).unwrap_or_else(|e| {
            panic!("the workspace list does not read as api::Workspace: {e}\n{all}")
        })
    }

    /// Creates a small workspace on `tiny`; returns the API's answer.
    /// Runs `sh -c SCRIPT` in workspace `ws` through the API, as the admin;
    /// it must exit 0. Its answer (output, exit code).
    pub async fn exec_ok(&self, ws: &str, script: &str) -> Value {
        let (s, out) = self
            .post(
                &format!("/v1/workspaces/{ws}/exec"),
                json!({"argv": ["sh", "-c", script]}),
            )
            .await;
        assert_eq!(
            (s, out["exit_code"].as_i64()),
            (200, Some(0)),
            "{script}: {out}"
        );
        out
    }

    pub async fn create(&self, name: &str) -> (u16, Value) {
        self.post(
            "/v1/workspaces",
            json!({"name": name, "image": self.tiny(), "cpu_millis": 200, "memory_bytes": 64u64 << 20,
                   "disk_bytes": 32u64 << 20, "pids": 64}),
        )
        .await
    }

    /// Waits until workspace `name` is in `state`; returns it.
    pub async fn wait_state(&self, name: &str, state: &str, timeout: Duration) -> Value {
        self.wait_state_as(name, state, timeout, &self.admin_token)
            .await
    }

    /// `wait_state` for a workspace of the user of `token`.
    pub async fn wait_state_as(
        &self,
        name: &str,
        state: &str,
        timeout: Duration,
        token: &str,
    ) -> Value {
        let want = api::State::parse(state).unwrap_or_else(|| panic!("no state {state:?}"));
        let last = std::sync::Mutex::new(Value::Null);
        let r = crate::eventually(timeout, || async {
            let (s, w) = self.get_as(&format!("/v1/workspaces/{name}"), token).await;
            *last.lock().unwrap() = w.clone();
            // A deleted workspace is gone from the API (404).
            let gone = want == api::State::Deleted && s == 404;
            let typed = (s == 200).then(|| {
                serde_json::from_value::<api::Workspace>(w.clone())
                    .unwrap_or_else(|e| panic!("{name} does not read as api::Workspace: {e}\n{w}"))
            });
            (gone || typed.is_some_and(|t| t.state == want)).then_some(w)
        })
        .await;
        r.unwrap_or_else(|| {
            panic!(
                "{name} not {state} in {timeout:?}: {}\n{}",
                last.lock().unwrap(),
                self.coordinator_log()
            )
        })
    }

    /// Drops the link's UDP traffic inside node `i`'s namespace (both ways).
    pub fn partition(&self, i: usize) {
        let n = &self.nodes[i];
        run(&format!(
            "nft -f - <<'EOF'\ntable inet cut {{\n chain out {{ type filter hook output priority 0; udp dport {p} drop; }}\n chain in {{ type filter hook input priority 0; udp sport {p} drop; }}\n}}\nEOF",
            p = self.link_port
        )
        .replace("nft -f -", &format!("ip netns exec {} nft -f -", n.netns)));
    }

    /// Keeps node `i` and its workspaces on this machine: in the node's
    /// namespace, everything not for the cluster's bridge network (the
    /// coordinator, the registry) or loopback is dropped, DNS included. For
    /// tests that make the agent act on generated input (image names).
    pub fn confine(&self, i: usize) {
        let n = &self.nodes[i];
        let net = format!("{}.0/24", self.host_ip.rsplit_once('.').unwrap().0);
        run(&format!(
            "ip netns exec {ns} nft -f - <<'EOF'\ntable inet confine {{\n \
             chain egress {{ type filter hook output priority 0; oif lo accept; ip daddr {net} accept; oifname \"{br}\" accept; drop; }}\n \
             chain routed {{ type filter hook forward priority -10; ip daddr {net} accept; oifname \"{br}\" accept; drop; }}\n}}\nEOF",
            ns = n.netns,
            br = n.bridge,
        ));
    }

    /// Heals a partition made by `partition`.
    pub fn heal(&self, i: usize) {
        run(&format!(
            "ip netns exec {} nft delete table inet cut",
            self.nodes[i].netns
        ));
    }
}

impl ClusterNode {
    /// Starts the agent in the node's namespace.
    pub fn start_agent(&mut self, join: Option<&str>) {
        assert!(self.agent.is_none());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("agent.log"))
            .expect("agent log");
        let mut cmd = in_netns(Some(&self.netns), &self.bin);
        cmd.arg("--config").arg(&self.config);
        if let Some(t) = join {
            cmd.args(["--join", t]);
        }
        let child = cmd
            .env(
                "BERTH_LOG",
                "info,berth_agent::workspace::exec=debug,netlink_packet_route=error",
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn berth-agent");
        self.agent = Some(child);
    }

    /// What the leak inventory reads of this node.
    pub fn parts(&self) -> crate::clean::NodeParts<'_> {
        crate::clean::NodeParts {
            label: &self.id,
            dir: &self.dir,
            netns_dir: &self.netns_dir,
            cgroup_parent: &self.tag,
            bridge: &self.bridge,
            nft_table: &self.tag,
            containerd: &self.containerd,
            netns: Some(&self.netns),
        }
    }

    /// The agent's process id, while it runs.
    pub fn agent_pid(&self) -> Option<u32> {
        self.agent.as_ref().map(Child::id)
    }

    /// `kill -9` of the agent.
    pub fn kill_agent(&mut self) {
        if let Some(mut c) = self.agent.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    /// Containers in the node's containerd.
    pub fn containers(&self) -> Vec<String> {
        self.containerd.ctr_list(&["containers", "ls", "-q"])
    }

    /// Running tasks in the node's containerd.
    pub fn running_tasks(&self) -> Vec<String> {
        self.containerd
            .ctr(&["tasks", "ls"])
            .1
            .lines()
            .skip(1)
            .filter(|l| l.contains("RUNNING"))
            .filter_map(|l| l.split_whitespace().next().map(String::from))
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.coordinator_log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- coordinator log (last 60 lines) ---");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
            for n in &self.nodes {
                let log = n.agent_log();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                eprintln!("--- agent log of {} (last 20 lines) ---", n.id);
                for l in tail.iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
        for i in 0..self.coordinators.len() {
            self.kill_coordinator_at(i);
        }
        for n in &mut self.nodes {
            n.kill_agent();
            // Remove every workspace container this node's containerd holds.
            for c in n.containers() {
                let _ = n.containerd.ctr(&["tasks", "kill", "-s", "SIGKILL", &c]);
            }
            std::thread::sleep(Duration::from_millis(200));
            for c in n.containers() {
                let _ = n.containerd.ctr(&["tasks", "rm", "-f", &c]);
                let _ = n.containerd.ctr(&["containers", "rm", &c]);
            }
            n.containerd.kill();
            let tag = format!("{}{}", self.bridge, n.id.trim_start_matches('n'));
            let _ = crate::sh(&format!(
                "for m in $(awk '{{print $5}}' /proc/self/mountinfo | grep '^{d}/' | sort -r); do umount -l $m; done; \
                 for f in {d}/netns/*; do [ -e \"$f\" ] && umount -l \"$f\"; done; \
                 ip netns del {ns}; \
                 for c in /sys/fs/cgroup/*/{tag}; do [ -d \"$c\" ] && find \"$c\" -depth -type d -exec rmdir {{}} \\; ; done",
                d = n.dir.display(),
                ns = n.netns,
                tag = tag,
            ));
        }
        let _ = crate::sh(&format!("ip link del {}", self.bridge));
        drop(self.postgres.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
