//! A Kubernetes node without Kubernetes: what the kubelet would do with a
//! pod of the agent's DaemonSet, done with `ctr` on the node's containerd,
//! from the manifest itself (`deploy/kubernetes/`).
//!
//! The node is a network namespace on the cluster's bridge and a mount
//! namespace in which the host paths the DaemonSet names
//! (`/var/lib/berth/agent`, `/run/berth`, `/run/containerd`,
//! `/var/lib/containerd`) are this test's
//! own directories, so the paths the agent hands to containerd are the same
//! inside its container and on "the host", as on a real node, without
//! touching this machine's. `/dev` and `/sys/fs/cgroup` are the machine's.
//! The node's containerd runs in both namespaces, with its socket at
//! `/run/containerd/containerd.sock` there.
//!
//! A pod's container gets exactly what its spec says, and nothing the
//! emulation does not know is let through: `privileged` (ctr
//! `--privileged`), `hostPID` (the machine's PID namespace), `hostNetwork`
//! (the node's; else the pod's own network namespace), the image's user
//! (`runAsUser` must be it), `readOnlyRootFilesystem`, capabilities
//! dropped, `hostPath`, `configMap`, `emptyDir` and `secret` volumes with
//! their `mountPropagation`, `readOnly` and `fsGroup`, `env` (values, the
//! node's name, Secret keys), `args` after the image's entrypoint with
//! `$(VAR)` expanded, and the files every kubelet adds (`/etc/hosts`,
//! `/etc/hostname`, `/etc/resolv.conf`). Any other security setting, volume kind or field
//! reference is refused, so the manifest cannot grow a privilege this test
//! does not give.

use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The host paths that are this node's own directories.
const PRIVATE_HOST_PATHS: [&str; 4] = [
    "/var/lib/berth/agent",
    "/run/berth",
    "/run/containerd",
    "/var/lib/containerd",
];

/// Every Linux capability (to CAP_CHECKPOINT_RESTORE, Linux 5.9).
const ALL_CAPS: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The containerd namespace the kubelet's containers live in.
const K8S_NAMESPACE: &str = "k8s.io";

/// The documents of `deploy/kubernetes/FILE`, as JSON (read with the
/// validator's YAML loader: `scripts/kubernetes-validate.sh --json`).
pub fn manifest(file: &str) -> Vec<Value> {
    let out = Command::new(crate::repo_root().join("scripts/kubernetes-validate.sh"))
        .arg("--json")
        .arg(crate::repo_root().join("deploy/kubernetes").join(file))
        .output()
        .expect("scripts/kubernetes-validate.sh --json");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// The document of kind `kind` among `docs`.
pub fn kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

/// One node: its namespaces and its containerd.
pub struct KubeNode {
    pub name: String,
    pub dir: PathBuf,
    pub netns: String,
    pub ip: String,
    /// The node's containerd socket, as this machine sees it.
    pub socket: PathBuf,
    holder: Child,
    containerd: Child,
    restarts: u32,
}

/// What a pod's container is given besides its spec.
pub struct Pod<'a> {
    /// The DaemonSet (or Deployment) document.
    pub workload: &'a Value,
    /// Its ConfigMaps by name: file name → content.
    pub config_maps: BTreeMap<String, BTreeMap<String, String>>,
    /// Its Secrets by name: key → value.
    pub secrets: BTreeMap<String, BTreeMap<String, String>>,
    /// What cluster DNS answers: a Service address in an env value → the
    /// address that serves it here.
    pub services: BTreeMap<String, String>,
    /// The image reference pulled instead of the manifest's (this
    /// machine's registry).
    pub image: String,
    /// The pod's network namespace (under /run/netns), unless hostNetwork.
    pub network: Option<String>,
    /// Its name among the workload's replicas (its volumes' directory).
    pub replica: String,
}

impl KubeNode {
    /// Makes node `name` on `netns` (made by the caller, e.g.
    /// `Cluster::wire_netns`) and starts its containerd.
    pub fn start(dir: &Path, name: &str, netns: &str, ip: &str) -> Self {
        let dir = dir.join(name);
        let mut binds = String::new();
        for host in PRIVATE_HOST_PATHS {
            let own = dir.join(host.trim_start_matches('/').replace('/', "-"));
            std::fs::create_dir_all(&own).expect("mkdir a node's host path");
            // The mount point (as DirectoryOrCreate would make it).
            // A peer group of its own, as a host path on a node's root is:
            // left in the root's, a mount the agent makes there would also
            // appear at the directory's own path, and an unmount from the
            // agent's container would not reach that copy.
            binds += &format!(
                "mkdir -p {host} && mount --bind {} {host} && mount --make-private {host} && mount --make-shared {host} && ",
                own.display()
            );
        }
        // A mount namespace of its own whose mounts are shared within it
        // (Bidirectional propagation needs a shared host path) and never
        // with this machine's.
        let mut holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(format!(
                "mount --make-rshared / && {binds} echo ready && exec sleep infinity"
            ))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("unshare the node's mount namespace");
        let mut line = String::new();
        BufReader::new(holder.stdout.take().expect("holder stdout"))
            .read_line(&mut line)
            .expect("the node's mount namespace");
        assert_eq!(line.trim(), "ready", "the node's mount namespace");
        let config = dir.join("containerd.toml");
        std::fs::write(
            &config,
            "version = 2\nroot = \"/var/lib/containerd\"\nstate = \"/run/containerd\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"/run/containerd/containerd.sock\"\n\
             [ttrpc]\n  address = \"/run/containerd/containerd.sock.ttrpc\"\n",
        )
        .expect("write the node's containerd config");
        let log = std::fs::File::create(dir.join("containerd.log")).expect("containerd log");
        let containerd = Command::new("nsenter")
            .arg(format!("--mount=/proc/{}/ns/mnt", holder.id()))
            .arg(format!("--net=/run/netns/{netns}"))
            .args(["containerd", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the node's containerd");
        let socket = dir.join("run-containerd/containerd.sock");
        let node = Self {
            name: name.into(),
            dir,
            netns: netns.into(),
            ip: ip.into(),
            socket,
            holder,
            containerd,
            restarts: 0,
        };
        let start = Instant::now();
        while !node.ctr(&["version"]).0 {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the node's containerd is not up"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        node
    }

    /// `ctr` against this node's containerd in namespace k8s.io:
    /// (success, stdout, stderr).
    pub fn ctr(&self, args: &[&str]) -> (bool, String, String) {
        self.ctr_in(K8S_NAMESPACE, args)
    }

    /// `ctr` in containerd namespace `ns`.
    pub fn ctr_in(&self, ns: &str, args: &[&str]) -> (bool, String, String) {
        // On the node, as its own tools would: ctr makes the task's stdio
        // FIFOs under /run/containerd, which the shim opens there.
        let out = Command::new("nsenter")
            .arg(format!("--mount=/proc/{}/ns/mnt", self.holder.id()))
            .args(["ctr", "--address", "/run/containerd/containerd.sock"])
            .args(["--namespace", ns])
            .args(args)
            .output()
            .expect("run ctr");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Pulls `pod.image` and runs the pod's first container as the kubelet
    /// would (a restart is a new container of the same pod); returns the
    /// container's id.
    pub fn run(&mut self, pod: &Pod) -> String {
        let spec = &pod.workload["spec"]["template"]["spec"];
        let container = &spec["containers"][0];
        let (ok, _, err) = self.ctr(&["images", "pull", "--plain-http", &pod.image]);
        assert!(ok, "pull {}: {err}", pod.image);
        let image = self.image_config(&pod.image);
        let mut args: Vec<String> = vec!["run".into(), "-d".into()];
        args.extend(self.security(spec, container, pod, &image));
        let env = self.env(container, pod);
        for (k, v) in &env {
            args.push("--env".into());
            args.push(format!("{k}={v}"));
        }
        let mounts = self.mounts(spec, container, pod);
        // The CRI plugin's rule: a Bidirectional mount makes the root
        // rshared (HostToContainer: rslave), or the container's mounts
        // would not reach the host.
        if mounts.iter().any(|m| m.contains(":rshared")) {
            args.push("--rootfs-propagation=rshared".into());
        } else if mounts.iter().any(|m| m.contains(":rslave")) {
            args.push("--rootfs-propagation=rslave".into());
        }
        args.extend(mounts);
        let id = format!(
            "{}-{}-{}",
            pod.workload["metadata"]["name"].as_str().expect("a name"),
            self.name,
            self.restarts
        );
        // Its output, where the kubelet keeps it: a file per container.
        args.push(format!(
            "--log-uri=file://{}",
            self.dir.join(format!("{id}.log")).display()
        ));
        self.restarts += 1;
        args.push(pod.image.clone());
        args.push(id.clone());
        args.extend(
            image["config"]["Entrypoint"]
                .as_array()
                .expect("the image has an entrypoint")
                .iter()
                .map(|a| a.as_str().unwrap().to_string()),
        );
        assert!(
            container.get("command").is_none(),
            "the emulation keeps the image's entrypoint"
        );
        for a in container["args"].as_array().into_iter().flatten() {
            args.push(expand(a.as_str().expect("an argument"), &env));
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, _, err) = self.ctr(&refs);
        assert!(
            ok,
            "ctr {}: {err}\n{}",
            args.join(" "),
            std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
        );
        id
    }

    /// The container's exec readiness probe: whether it succeeds now.
    pub fn ready(&self, id: &str, container: &Value) -> bool {
        let probe: Vec<&str> = container["readinessProbe"]["exec"]["command"]
            .as_array()
            .expect("an exec readiness probe")
            .iter()
            .map(|a| a.as_str().expect("a probe argument"))
            .collect();
        self.exec(id, &probe).0
    }

    /// Runs `argv` in container `id` (a new process, as `kubectl exec`):
    /// (success, stdout, stderr).
    pub fn exec(&self, id: &str, argv: &[&str]) -> (bool, String, String) {
        let exec_id = format!("exec{}", rand_suffix());
        let mut args = vec!["tasks", "exec", "--exec-id", &exec_id, id];
        args.extend(argv);
        self.ctr(&args)
    }

    /// Stops container `id` as the kubelet does at a restart or rollout:
    /// SIGTERM, SIGKILL after the grace period, then removes it.
    pub fn stop(&self, id: &str, grace: Duration) {
        let _ = self.ctr(&["tasks", "kill", "-s", "SIGTERM", id]);
        let start = Instant::now();
        while start.elapsed() < grace && self.task_running(id) {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.ctr(&["tasks", "kill", "-s", "SIGKILL", id]);
        let _ = self.ctr(&["tasks", "rm", "-f", id]);
        let (ok, _, err) = self.ctr(&["containers", "rm", id]);
        assert!(ok, "remove container {id}: {err}");
    }

    fn task_running(&self, id: &str) -> bool {
        let (_, out, _) = self.ctr(&["tasks", "ls"]);
        out.lines()
            .any(|l| l.starts_with(&format!("{id} ")) && l.contains("RUNNING"))
    }

    /// The pid of task `id` in containerd namespace `ns`, if it runs.
    pub fn task_pid(&self, ns: &str, id: &str) -> Option<u32> {
        let (_, out, _) = self.ctr_in(ns, &["tasks", "ls"]);
        out.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.first() == Some(&id) && f.get(2) == Some(&"RUNNING"))
                .then(|| f[1].parse().ok())
                .flatten()
        })
    }

    /// The container ids in containerd namespace `ns`.
    pub fn containers_in(&self, ns: &str) -> Vec<String> {
        let (_, out, _) = self.ctr_in(ns, &["containers", "ls", "-q"]);
        out.lines().map(str::to_string).collect()
    }

    /// The security settings let through: privileged, hostPID,
    /// hostNetwork (else the pod's own network namespace); runAsNonRoot,
    /// runAsUser and runAsGroup when they are the image's user (ctr runs
    /// the image's user and has no flag for another), fsGroup (the volumes'
    /// group); allowPrivilegeEscalation false (containerd's default,
    /// no_new_privs), readOnlyRootFilesystem, capabilities dropped.
    fn security(&self, spec: &Value, container: &Value, pod: &Pod, image: &Value) -> Vec<String> {
        let mut out = Vec::new();
        let user = image["config"]["User"].as_str().unwrap_or("0");
        let (uid, gid) = user.split_once(':').unwrap_or((user, user));
        for (k, v) in spec["securityContext"].as_object().into_iter().flatten() {
            match (k.as_str(), v) {
                ("runAsNonRoot", Value::Bool(true)) => {
                    assert_ne!(uid, "0", "runAsNonRoot: the image runs as root")
                }
                ("runAsUser", n) => {
                    assert_eq!(n.to_string(), uid, "runAsUser is not the image's user")
                }
                ("runAsGroup", n) => {
                    assert_eq!(n.to_string(), gid, "runAsGroup is not the image's group")
                }
                ("fsGroup", _) => {}
                _ => panic!("pod securityContext.{k} is not emulated: add it here first"),
            }
        }
        for (k, v) in container["securityContext"]
            .as_object()
            .into_iter()
            .flatten()
        {
            match (k.as_str(), v) {
                ("privileged", Value::Bool(true)) => out.push("--privileged".into()),
                ("privileged", Value::Bool(false)) => {}
                ("allowPrivilegeEscalation", Value::Bool(false)) => {}
                ("readOnlyRootFilesystem", Value::Bool(true)) => out.push("--read-only".into()),
                ("capabilities", c) => {
                    assert!(c.get("add").is_none(), "capabilities.add is not emulated");
                    for cap in c["drop"].as_array().into_iter().flatten() {
                        // ctr takes named capabilities only: ALL is each.
                        match cap.as_str().unwrap() {
                            "ALL" => out.extend(ALL_CAPS.iter().map(|c| format!("--cap-drop={c}"))),
                            cap => out.push(format!("--cap-drop=CAP_{cap}")),
                        }
                    }
                }
                _ => panic!("securityContext.{k} is not emulated: add it here first"),
            }
        }
        if spec["hostPID"] == true {
            out.push("--with-ns".into());
            // The runtime's own (the CRI plugin leaves the namespace out;
            // ctr can only name one to join). /proc/1's fails in runc 1.1.
            out.push("pid:/proc/self/ns/pid".into());
        }
        if spec["hostNetwork"] == true {
            // The task's network namespace is its shim's: the node's.
            out.push("--net-host".into());
        } else {
            let netns = pod.network.as_deref().expect("a pod network namespace");
            out.push("--with-ns".into());
            out.push(format!("network:/run/netns/{netns}"));
        }
        assert!(spec.get("hostIPC").is_none(), "hostIPC is not emulated");
        out
    }

    fn env(&self, container: &Value, pod: &Pod) -> Vec<(String, String)> {
        let mut env = Vec::new();
        for e in container["env"].as_array().into_iter().flatten() {
            let name = e["name"].as_str().expect("an env name").to_string();
            let value = if let Some(v) = e["value"].as_str() {
                pod.services
                    .get(v)
                    .cloned()
                    .unwrap_or_else(|| v.to_string())
            } else if e["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName" {
                self.name.clone()
            } else if let Some(r) = e["valueFrom"]["secretKeyRef"].as_object() {
                let (secret, key) = (r["name"].as_str().unwrap(), r["key"].as_str().unwrap());
                pod.secrets
                    .get(secret)
                    .and_then(|s| s.get(key))
                    .unwrap_or_else(|| panic!("Secret {secret} has no {key}"))
                    .clone()
            } else {
                panic!("env {name}: {e} is not emulated")
            };
            env.push((name, value));
        }
        env
    }

    fn mounts(&self, spec: &Value, container: &Value, pod: &Pod) -> Vec<String> {
        let volumes: BTreeMap<&str, &Value> = spec["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| (v["name"].as_str().expect("a volume name"), v))
            .collect();
        let mut out = Vec::new();
        let mut mount = |src: &Path, dst: &str, options: &str| {
            out.push("--mount".to_string());
            out.push(format!(
                "type=bind,src={},dst={dst},options={options}",
                src.display()
            ));
        };
        for m in container["volumeMounts"].as_array().into_iter().flatten() {
            let name = m["name"].as_str().expect("a mount name");
            let dst = m["mountPath"].as_str().expect("a mountPath");
            let v = volumes
                .get(name)
                .unwrap_or_else(|| panic!("no volume {name}"));
            let mut options = vec!["rbind"];
            options.push(if m["readOnly"] == true { "ro" } else { "rw" });
            match m["mountPropagation"].as_str() {
                Some("Bidirectional") => options.push("rshared"),
                Some("HostToContainer") => options.push("rslave"),
                None | Some("None") => options.push("rprivate"),
                Some(p) => panic!("mountPropagation {p} is not emulated"),
            }
            let src = if let Some(h) = v["hostPath"].as_object() {
                let path = h["path"].as_str().expect("a hostPath");
                match h.get("type").and_then(Value::as_str) {
                    Some("DirectoryOrCreate") => {
                        assert!(self.in_node(&format!("mkdir -p {path}")).0)
                    }
                    Some("Directory") => {
                        assert!(self.in_node(&format!("test -d {path}")).0, "{path}")
                    }
                    Some("Socket") => assert!(self.in_node(&format!("test -S {path}")).0, "{path}"),
                    t => panic!("hostPath type {t:?} is not emulated"),
                }
                PathBuf::from(path)
            } else if let Some(c) = v["configMap"].as_object() {
                let cm = c["name"].as_str().expect("a ConfigMap name");
                let files = pod
                    .config_maps
                    .get(cm)
                    .unwrap_or_else(|| panic!("no ConfigMap {cm}"));
                let d = self.dir.join("configmaps").join(cm);
                std::fs::create_dir_all(&d).expect("mkdir a ConfigMap");
                for (f, text) in files {
                    std::fs::write(d.join(f), text).expect("write a ConfigMap file");
                }
                d
            } else if v.get("emptyDir").is_some() {
                let d = self.dir.join("pods").join(&pod.replica).join(name);
                std::fs::create_dir_all(&d).expect("mkdir an emptyDir");
                self.own(&d, spec);
                d
            } else if let Some(sec) = v["secret"].as_object() {
                let name_ = sec["secretName"].as_str().expect("a secretName");
                let data = pod
                    .secrets
                    .get(name_)
                    .unwrap_or_else(|| panic!("no Secret {name_}"));
                let d = self.dir.join("pods").join(&pod.replica).join(name);
                std::fs::create_dir_all(&d).expect("mkdir a Secret volume");
                for item in sec["items"].as_array().expect("the Secret's items") {
                    let (key, path) = (
                        item["key"].as_str().unwrap(),
                        item["path"].as_str().unwrap(),
                    );
                    let f = d.join(path);
                    std::fs::write(
                        &f,
                        data.get(key)
                            .unwrap_or_else(|| panic!("Secret {name_} has no {key}")),
                    )
                    .expect("write a Secret file");
                    let mode = item["mode"].as_u64().unwrap_or(0o644) as u32;
                    std::fs::set_permissions(
                        &f,
                        std::os::unix::fs::PermissionsExt::from_mode(mode),
                    )
                    .expect("chmod a Secret file");
                    self.own(&f, spec);
                }
                d
            } else {
                panic!("volume {name}: only hostPath, configMap, emptyDir and secret are emulated")
            };
            mount(&src, dst, &options.join(":"));
        }
        // What the kubelet gives every container.
        for f in ["/etc/hosts", "/etc/hostname", "/etc/resolv.conf"] {
            mount(Path::new(f), f, "rbind:ro");
        }
        out
    }

    /// The image's config (entrypoint, user).
    fn image_config(&self, image: &str) -> Value {
        let (ok, out, err) = self.ctr(&["images", "ls", &format!("name=={image}")]);
        assert!(ok, "{err}");
        assert!(out.contains(image), "{image} not pulled: {out}");
        let (ok, config, err) = self.ctr(&["content", "get", &self.config_digest(image)]);
        assert!(ok, "{err}");
        serde_json::from_str(&config).expect("the image config")
    }

    fn config_digest(&self, image: &str) -> String {
        let (_, out, _) = self.ctr(&["images", "ls"]);
        let target = out
            .lines()
            .find(|l| l.starts_with(&format!("{image} ")))
            .and_then(|l| l.split_whitespace().nth(2))
            .expect("the image's manifest digest")
            .to_string();
        let (ok, manifest, err) = self.ctr(&["content", "get", &target]);
        assert!(ok, "{err}");
        let manifest: Value = serde_json::from_str(&manifest).expect("the image manifest");
        manifest["config"]["digest"]
            .as_str()
            .expect("a config digest")
            .to_string()
    }

    /// A volume's file or directory, owned by the pod's fsGroup as the
    /// kubelet makes it (group-owned, group-writable directories).
    fn own(&self, path: &Path, spec: &Value) {
        if let Some(g) = spec["securityContext"]["fsGroup"].as_u64() {
            let (ok, _, err) = crate::sh(&format!(
                "chgrp {g} {p} && if [ -d {p} ]; then chmod 2775 {p}; else chmod g+r {p}; fi",
                p = path.display()
            ));
            assert!(ok, "{err}");
        }
    }

    /// Runs `sh -c CMD` in the node's mount namespace.
    pub fn in_node(&self, cmd: &str) -> (bool, String, String) {
        crate::sh(&format!(
            "nsenter --mount=/proc/{}/ns/mnt sh -c '{}'",
            self.holder.id(),
            cmd.replace('\'', "'\\''")
        ))
    }
}

fn expand(arg: &str, env: &[(String, String)]) -> String {
    env.iter().fold(arg.to_string(), |a, (k, v)| {
        a.replace(&format!("$({k})"), v)
    })
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl KubeNode {
    /// The output of every container this node ran, oldest first.
    pub fn logs(&self) -> String {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "log") && !p.ends_with("containerd.log"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|f| {
                format!(
                    "=== {} ===\n{}",
                    f.display(),
                    std::fs::read_to_string(f).unwrap_or_default()
                )
            })
            .collect()
    }
}

impl Drop for KubeNode {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = self.logs();
            let tail: Vec<&str> = logs.lines().rev().take(40).collect();
            eprintln!("--- {}'s containers (last 40 lines) ---", self.name);
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        for ns in ["berth", K8S_NAMESPACE] {
            for c in self.containers_in(ns) {
                let _ = self.ctr_in(ns, &["tasks", "kill", "-s", "SIGKILL", &c]);
            }
        }
        std::thread::sleep(Duration::from_millis(300));
        for ns in ["berth", K8S_NAMESPACE] {
            for c in self.containers_in(ns) {
                let _ = self.ctr_in(ns, &["tasks", "rm", "-f", &c]);
                let _ = self.ctr_in(ns, &["containers", "rm", &c]);
            }
        }
        let _ = self.containerd.kill();
        let _ = self.containerd.wait();
        // The node's mounts go with its mount namespace.
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        let _ = crate::sh(&format!(
            "ip netns del {ns}; for c in /sys/fs/cgroup/*/k8s.io; do [ -d \"$c\" ] && find \"$c\" -depth -type d -empty -exec rmdir {{}} \\; ; done",
            ns = self.netns
        ));
    }
}
