//! keystroke: SSH keystroke echo through Berth against an OpenSSH sshd.

use super::*;

/// SSH keystroke echo: one byte typed into `cat` under a PTY, until its echo
/// comes back, by the same SSH client (russh) through Berth (HTTP upgrade →
/// coordinator → QUIC → the agent's SSH server → the workspace) and directly
/// to an OpenSSH sshd on this machine's loopback.
pub(super) async fn keystroke() {
    let n = iters(500);
    let c = Cluster::start(ClusterOptions::default()).await;
    let (s, w) = c.create("ks").await;
    assert_eq!(s, 201, "{w}");
    c.wait_state("ks", "running", Duration::from_secs(60)).await;
    let (_, berth_key) = berth_ssh_setup(&c).await;
    let key = Arc::new(russh::keys::load_secret_key(&berth_key, None).unwrap());
    let sshd = berth_tests::openssh::Sshd::start(&c.dir.join("sshd-ks"), None, free_port());
    let sshd_key = Arc::new(russh::keys::load_secret_key(&sshd.key, None).unwrap());

    let mut via_berth = Vec::new();
    let mut via_sshd = Vec::new();
    for round in 0..2 {
        for which in if round == 0 { [0, 1] } else { [1, 0] } {
            if which == 0 {
                let http = reqwest::Client::new();
                let resp = http
                    .get(format!("{}/v1/workspaces/ks/ssh", c.api))
                    .bearer_auth(&c.admin_token)
                    .header("connection", "upgrade")
                    .header("upgrade", "berth-ssh")
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status().as_u16(), 101);
                let stream = resp.upgrade().await.unwrap();
                via_berth.extend(echo_times(stream, key.clone(), n / 2).await);
            } else {
                let stream = tokio::net::TcpStream::connect(("127.0.0.1", sshd.port))
                    .await
                    .unwrap();
                stream.set_nodelay(true).unwrap();
                via_sshd.extend(echo_times(stream, sshd_key.clone(), n / 2).await);
            }
        }
    }
    let (b, d) = (sorted(via_berth), sorted(via_sshd));
    let (b50, d50) = (percentile(&b, 0.5), percentile(&d, 0.5));
    let (b99, d99) = (percentile(&b, 0.99), percentile(&d, 0.99));
    println!("\nkeystroke: one byte typed into `cat` under a PTY until its echo returns, same SSH client (russh), {n} keystrokes each");
    println!("{:<34} {:>12} {:>12}", "", "p50 µs", "p99 µs");
    println!(
        "{:<34} {:>12.0} {:>12.0}",
        "OpenSSH sshd on loopback (baseline)", d50, d99
    );
    println!(
        "{:<34} {:>12.0} {:>12.0}",
        "berth (coordinator → agent)", b50, b99
    );
    println!(
        "{:<34} {:>11.2}x {:>11.2}x",
        "ratio berth / sshd",
        b50 / d50,
        b99 / d99
    );
    record("keystroke", "sshd_echo_p50_us", d50, "us", "");
    record("keystroke", "berth_echo_p50_us", b50, "us", "");
    record("keystroke", "echo_p50_ratio_vs_sshd", b50 / d50, "x", "");
    record("keystroke", "berth_echo_p99_us", b99, "us", "");
}

pub(super) struct Trusting;

impl russh::client::Handler for Trusting {
    type Error = russh::Error;
    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

/// Logs in on `stream`, runs `cat` under a PTY, and times `n` echoes (µs).
pub(super) async fn echo_times<S>(
    stream: S,
    key: Arc<russh::keys::PrivateKey>,
    n: usize,
) -> Vec<f64>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let cfg = Arc::new(russh::client::Config {
        nodelay: true,
        ..Default::default()
    });
    let mut session = russh::client::connect_stream(cfg, stream, Trusting)
        .await
        .expect("ssh handshake");
    let auth = session
        .authenticate_publickey("root", russh::keys::PrivateKeyWithHashAlg::new(key, None))
        .await
        .expect("ssh auth");
    assert!(auth.success(), "ssh key refused");
    let mut ch = session.channel_open_session().await.unwrap();
    ch.request_pty(true, "xterm", 80, 24, 0, 0, &[])
        .await
        .unwrap();
    ch.exec(true, "cat").await.unwrap();
    let mut times = Vec::with_capacity(n);
    // Let the session settle (prompt-less `cat` started).
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..n + 20 {
        let byte = b'a' + (i % 26) as u8;
        let t = Instant::now();
        ch.data(&[byte][..]).await.unwrap();
        loop {
            match tokio::time::timeout(Duration::from_secs(10), ch.wait()).await {
                Ok(Some(russh::ChannelMsg::Data { data })) if data.contains(&byte) => break,
                Ok(Some(_)) => {}
                other => panic!("no echo: {other:?}"),
            }
        }
        if i >= 20 {
            times.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    let _ = ch.eof().await;
    let _ = session
        .disconnect(russh::Disconnect::ByApplication, "", "")
        .await;
    times
}
