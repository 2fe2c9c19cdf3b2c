//! Network isolation, on real namespaces, veths, bridge and nftables: each
//! refusal is paired with a positive control, so a broken network cannot pass.

use berth_tests::{assert_clean, free_port, sh, Node, NodeOptions};
use std::process::{Child, Command, Stdio};

/// A host-side helper (server, namespace, link) removed on drop.
struct Host {
    children: Vec<Child>,
    undo: Vec<String>,
}

impl Host {
    fn run(&mut self, cmd: &str) {
        let (ok, _, err) = sh(cmd);
        assert!(ok, "{cmd}: {err}");
    }
    /// A namespace `ns` whose address `ip` (a /30) is routed through a veth
    /// whose node end holds `gw_ip`; removed on drop.
    fn routed_netns(&mut self, ns: &str, gw_ip: &str, ip: &str) {
        let (hv, nv) = (format!("{ns}h"), format!("{ns}i"));
        self.undo.push(format!("ip netns del {ns}"));
        self.undo.push(format!("ip link del {hv}"));
        self.run(&format!(
            "ip netns add {ns} && ip link add {hv} type veth peer name {nv} && ip link set {nv} netns {ns} && \
             ip addr add {gw_ip}/30 dev {hv} && ip link set {hv} up && \
             ip netns exec {ns} ip addr add {ip}/30 dev {nv} && ip netns exec {ns} ip link set {nv} up && \
             ip netns exec {ns} ip link set lo up && ip netns exec {ns} ip route add default via {gw_ip}"
        ));
    }
    fn spawn(&mut self, cmd: &str) {
        let c = Command::new("sh")
            .arg("-c")
            .arg(format!("exec {cmd}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.children.push(c);
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for u in self.undo.iter().rev() {
            let _ = sh(u);
        }
    }
}

fn wait_http(url: &str, netns: Option<&str>) {
    let prefix = netns.map_or(String::new(), |n| format!("ip netns exec {n} "));
    for _ in 0..200 {
        if sh(&format!("{prefix}curl -s -m 1 -o /dev/null {url}")).0 {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    panic!("{url} never answered");
}

#[tokio::test(flavor = "multi_thread")]
async fn workspaces_are_isolated_but_reach_the_internet() {
    berth_tests::images(&["dev"]);
    // Two hosts on private networks beside the node: one refused by the
    // default egress policy, one allowed by the node's allow-list.
    let x = (std::process::id() % 250) as u64;
    let (lan_ip, allowed_ip) = (format!("192.168.{x}.2"), format!("172.16.{x}.2"));
    let mut node = Node::new(NodeOptions {
        network_config: format!("egress_allow = [\"172.16.{x}.0/30\"]"),
        ..Default::default()
    });
    node.start_agent().await;
    let baseline = berth_tests::clean::nft_rules(&node.nft_table);
    let mut host = Host {
        children: Vec::new(),
        undo: Vec::new(),
    };
    let id = node.id.clone();

    // A stand-in for the internet: a namespace behind a routed veth.
    let (inet, host_ip, inet_ip) = (
        format!("bi{id}"),
        format!("198.18.{x}.1"),
        format!("198.18.{x}.2"),
    );
    host.routed_netns(&inet, &host_ip, &inet_ip);
    let www = node.dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "hello from the internet\n").unwrap();
    host.spawn(&format!(
        "ip netns exec {inet} busybox httpd -f -p {inet_ip}:8080 -h {}",
        www.display()
    ));
    wait_http(&format!("http://{inet_ip}:8080/"), Some(&inet));

    for (tag, ip) in [("l", &lan_ip), ("a", &allowed_ip)] {
        let ns = format!("b{tag}{id}");
        let gw_ip = format!("{}.1", ip.rsplit_once('.').unwrap().0);
        host.routed_netns(&ns, &gw_ip, ip);
        host.spawn(&format!(
            "ip netns exec {ns} busybox httpd -f -p {ip}:8080 -h {}",
            www.display()
        ));
        // Control: the node itself reaches both.
        wait_http(&format!("http://{ip}:8080/"), None);
    }

    // The cloud metadata address, served on the node itself.
    let md_port = free_port();
    let dummy = format!("bmd{id}");
    host.undo.push(format!("ip link del {dummy}"));
    // (a veth pair rather than a dummy link: not every kernel has the dummy driver)
    host.run(&format!(
        "ip link add {dummy} type veth peer name {dummy}p && ip addr add 169.254.169.254/32 dev {dummy} && \
         ip link set {dummy} up && ip link set {dummy}p up"
    ));
    host.spawn(&format!(
        "busybox httpd -f -p 169.254.169.254:{md_port} -h {}",
        www.display()
    ));
    wait_http(&format!("http://169.254.169.254:{md_port}/"), None);

    // A service of the node's own, on every address.
    let svc_port = free_port();
    host.spawn(&format!(
        "busybox httpd -f -p 0.0.0.0:{svc_port} -h {}",
        www.display()
    ));
    wait_http(&format!("http://127.0.0.1:{svc_port}/"), None);
    // ... and on IPv6.
    let svc6_port = free_port();
    host.spawn(&format!(
        "python3 -m http.server {svc6_port} --bind :: --directory {}",
        www.display()
    ));
    wait_http(&format!("http://[::1]:{svc6_port}/"), None);

    let dev = format!("{}/dev:latest", node.registry.addr);
    for name in ["wa", "wb"] {
        let mut spec = node.spec(name);
        spec.image = dev.clone();
        spec.memory_bytes = 256 << 20;
        if name == "wb" {
            // B's own allow-list (what its tier grants): the LAN host.
            spec.egress_allow = vec![format!("192.168.{x}.0/30")];
        }
        node.create(spec).await.expect("create");
    }
    let a_ip = node.status("wa").await.unwrap().ip;
    let gw = node.subnet.replace(".0/24", ".1");

    // Servers in A: TCP 7000 (HTTP) and UDP 7001 (appends datagrams to a file).
    let udp = "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('0.0.0.0',7001))\n\
               while True:\n  d,_=s.recvfrom(100)\n  open('/workspace/udp.log','ab').write(d+b'\\n')\n";
    std::fs::write(node.volume("wa").join("udp.py"), udp).unwrap();
    let (code, _, err) = node
        .sh("wa", "cd /workspace && echo from-a > a.txt && (python3 -m http.server 7000 >/dev/null 2>&1 &) && (python3 udp.py >/dev/null 2>&1 &)")
        .await;
    assert_eq!(code, 0, "{err}");
    wait_http(&format!("http://{a_ip}:7000/a.txt"), None);

    // TCP: the node reaches A (control); B does not.
    let (ok, out, _) = sh(&format!("curl -s -m 2 http://{a_ip}:7000/a.txt"));
    assert!(
        ok && out == "from-a\n",
        "control: node -> A over TCP ({out:?})"
    );
    let (code, _, _) = node
        .sh("wb", &format!("curl -s -m 2 http://{a_ip}:7000/a.txt"))
        .await;
    assert_ne!(code, 0, "B reached A over TCP");

    // UDP: B's datagram never arrives, the node's does.
    let send = |who: &str| {
        format!("python3 -c \"import socket;socket.socket(socket.AF_INET,socket.SOCK_DGRAM).sendto(b'{who}',('{a_ip}',7001))\"")
    };
    // B's datagram goes first on the same bridge: by the time the node's
    // has arrived, B's would have too.
    assert_eq!(node.sh("wb", &send("from-b")).await.0, 0);
    assert!(sh(&send("from-node")).0);
    let got = berth_tests::eventually(std::time::Duration::from_secs(3), || async {
        let (_, log, _) = node.sh("wa", "cat /workspace/udp.log 2>/dev/null").await;
        log.contains("from-node").then_some(log)
    })
    .await
    .expect("control: node -> A over UDP");
    assert!(!got.contains("from-b"), "B reached A over UDP: {got:?}");

    // ICMP, from inside B's namespace: the internet answers (control), A does not.
    let b_ns = node.netns("wb").display().to_string();
    assert!(
        sh(&format!(
            "nsenter --net={b_ns} busybox ping -c1 -W2 {inet_ip}"
        ))
        .0,
        "control: ICMP from B to the internet"
    );
    assert!(
        !sh(&format!("nsenter --net={b_ns} busybox ping -c1 -W1 {a_ip}")).0,
        "B pinged A"
    );

    // IPv6: workspaces have link-local addresses only. A serves on its
    // own (control: reached from A's namespace) and B does not reach it
    // (isolated bridge ports); the node's service answers on the bridge's
    // link-local address (control: from the node) and B does not reach it
    // (not even neighbour discovery towards the node passes).
    let a_ns = node.netns("wa").display().to_string();
    let link_local = |ns: Option<&str>, dev: &str| {
        let enter = ns.map_or(String::new(), |n| format!("nsenter --net={n} "));
        let (_, out, _) = sh(&format!(
            "{enter}ip -6 -o addr show dev {dev} scope link | awk '{{print $4}}' | cut -d/ -f1"
        ));
        out.trim().to_string()
    };
    let (a6, gw6) = (
        link_local(Some(&a_ns), "eth0"),
        link_local(None, &node.bridge),
    );
    assert!(
        a6.starts_with("fe80:") && gw6.starts_with("fe80:"),
        "{a6} {gw6}"
    );
    let br = &node.bridge;
    let (code, _, err) = node
        .sh(
            "wa",
            "cd /workspace && (python3 -m http.server 7006 --bind :: >/dev/null 2>&1 &)",
        )
        .await;
    assert_eq!(code, 0, "{err}");
    let a6_url = format!("http://[{a6}%eth0]:7006/a.txt");
    let served = berth_tests::eventually(std::time::Duration::from_secs(5), || async {
        sh(&format!("nsenter --net={a_ns} curl -sg -m 1 '{a6_url}'"))
            .0
            .then_some(())
    })
    .await;
    assert!(
        served.is_some(),
        "control: A serves on its link-local address"
    );
    assert!(
        !sh(&format!("nsenter --net={b_ns} curl -sg -m 2 '{a6_url}'")).0,
        "B reached A over IPv6"
    );
    assert!(
        sh(&format!(
            "curl -sg -m 3 -o /dev/null 'http://[{gw6}%{br}]:{svc6_port}/'"
        ))
        .0,
        "control: the node's service answers on the bridge's link-local address"
    );
    assert!(
        !sh(&format!(
            "nsenter --net={b_ns} curl -sg -m 2 -o /dev/null 'http://[{gw6}%eth0]:{svc6_port}/'"
        ))
        .0,
        "B reached the node's service over IPv6"
    );

    // The internet is reachable from a workspace.
    let (code, out, err) = node
        .sh("wa", &format!("curl -sS -m 5 http://{inet_ip}:8080/"))
        .await;
    assert_eq!(
        (code, out.as_str()),
        (0, "hello from the internet\n"),
        "{err}"
    );

    // A private network is not (egress policy) unless allow-listed.
    let (code, _, _) = node
        .sh("wa", &format!("curl -s -m 2 http://{lan_ip}:8080/"))
        .await;
    assert_ne!(code, 0, "workspace reached the private host {lan_ip}");
    let (code, out, err) = node
        .sh("wa", &format!("curl -sS -m 5 http://{allowed_ip}:8080/"))
        .await;
    assert_eq!(
        (code, out.as_str()),
        (0, "hello from the internet\n"),
        "control: the allow-listed private host: {err}"
    );

    // B's own allow-list reaches what A's policy refuses, also after an
    // agent restart (the node's rules are rebuilt then, and the prepared
    // slots' veths removed: the bridge's address must not follow them).
    for round in ["first", "after restart"] {
        let (code, out, err) = node
            .sh("wb", &format!("curl -sS -m 5 http://{lan_ip}:8080/"))
            .await;
        assert_eq!(
            (code, out.as_str()),
            (0, "hello from the internet\n"),
            "{round}: B's allow-listed LAN host: {err}"
        );
        let (code, _, _) = node
            .sh("wa", &format!("curl -s -m 2 http://{lan_ip}:8080/"))
            .await;
        assert_ne!(code, 0, "{round}: A reached B's allowance");
        if round == "first" {
            node.kill_agent();
            node.start_agent().await;
        }
    }

    // Metadata and the node's own services are not.
    let (code, _, _) = node
        .sh(
            "wa",
            &format!("curl -s -m 2 http://169.254.169.254:{md_port}/"),
        )
        .await;
    assert_ne!(code, 0, "workspace reached 169.254.169.254");
    for addr in [gw.as_str(), host_ip.as_str()] {
        let (code, _, _) = node
            .sh("wa", &format!("curl -s -m 2 http://{addr}:{svc_port}/"))
            .await;
        assert_ne!(code, 0, "workspace reached the node's service on {addr}");
    }

    for name in ["wa", "wb"] {
        node.delete(name).await.unwrap();
    }
    assert_clean(&node, &baseline);
}
