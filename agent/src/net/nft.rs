//! The node's nftables rules: isolation between workspaces, from the
//! node and from private ranges, per-workspace allowances, egress NAT.

use crate::config::Subnet;
use crate::error::{AgentError, Result};
use std::net::{IpAddr, Ipv4Addr};

/// Applies an nftables script.
pub(super) async fn nft(script: &str) -> Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(AgentError::io("run nft"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .await
            .map_err(AgentError::io("write to nft"))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(AgentError::io("wait for nft"))?;
    if !out.status.success() {
        return Err(AgentError::Network(format!(
            "nft: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// IPv4 destinations no workspace reaches unless allowed: this network,
/// RFC 1918, CGNAT, loopback, IETF protocol assignments, multicast and reserved.
pub const PRIVATE_V4: &str = "0.0.0.0/8, 10.0.0.0/8, 100.64.0.0/10, 127.0.0.0/8, 172.16.0.0/12, \
192.0.0.0/24, 192.168.0.0/16, 224.0.0.0/3";
/// The IPv6 ones: loopback, unspecified, IPv4-mapped, ULA, link-local, multicast.
pub const PRIVATE_V6: &str = "::/127, ::ffff:0:0/96, fc00::/7, fe80::/10, ff00::/8";

/// The nftables set of (workspace address . allowed private range) pairs:
/// what one workspace's own allow-list (its tier's) adds to the node's.
pub const WORKSPACE_ALLOW: &str = "workspace_allow";

/// The script that replaces the per-workspace allow set with `entries`
/// (workspace address, IPv4 CIDRs it may reach), in one transaction.
pub fn workspace_allow_script(table: &str, entries: &[(Ipv4Addr, Vec<String>)]) -> String {
    let elements: Vec<String> = entries
        .iter()
        .flat_map(|(ip, cidrs)| cidrs.iter().map(move |c| format!("{ip} . {c}")))
        .collect();
    let mut script = format!("flush set inet {table} {WORKSPACE_ALLOW}\n");
    if !elements.is_empty() {
        script += &format!(
            "add element inet {table} {WORKSPACE_ALLOW} {{ {} }}\n",
            elements.join(", ")
        );
    }
    script
}

/// What workspaces may reach beyond the internet.
#[derive(Debug, Clone, Default)]
pub struct Egress {
    /// CIDRs allowed although private (validated by config).
    pub allow: Vec<String>,
    /// The node's DNS servers: port 53 on them is allowed.
    pub dns: Vec<IpAddr>,
}

/// The `nameserver` addresses of a resolv.conf.
pub fn nameservers(resolv_conf: &str) -> Vec<IpAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse().ok())
        .collect()
}

/// Accept rules for `egress` from `bridge`, IPv4 and IPv6 apart.
fn egress_rules(bridge: &str, egress: &Egress) -> String {
    let mut rules = String::new();
    let family = |a: &str| if a.contains(':') { "ip6" } else { "ip" };
    for cidr in &egress.allow {
        rules += &format!(
            "    iifname \"{bridge}\" {} daddr {cidr} accept\n",
            family(cidr)
        );
    }
    for dns in &egress.dns {
        let f = if dns.is_ipv6() { "ip6" } else { "ip" };
        rules += &format!(
            "    iifname \"{bridge}\" {f} daddr {dns} meta l4proto {{ tcp, udp }} th dport 53 accept\n"
        );
    }
    rules
}

/// The node's nftables rules for one bridge, as an atomic replace script.
pub fn ruleset(table: &str, bridge: &str, subnet: Subnet, egress: &Egress) -> String {
    let allowed = egress_rules(bridge, egress);
    format!(
        r#"table inet {table} {{}}
delete table inet {table}
table inet {table} {{
  chain input {{
    type filter hook input priority filter; policy accept;
    iifname "{bridge}" ct state established,related accept
    iifname "{bridge}" drop
  }}
  set {WORKSPACE_ALLOW} {{
    type ipv4_addr . ipv4_addr; flags interval;
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    iifname "{bridge}" oifname "{bridge}" drop
    iifname "{bridge}" ip daddr 169.254.0.0/16 drop
    iifname "{bridge}" ip6 daddr fe80::/10 drop
{allowed}    iifname "{bridge}" ip saddr . ip daddr @{WORKSPACE_ALLOW} accept
    iifname "{bridge}" ip daddr {{ {PRIVATE_V4} }} drop
    iifname "{bridge}" ip6 daddr {{ {PRIVATE_V6} }} drop
    iifname "{bridge}" accept
    oifname "{bridge}" ct state established,related accept
    oifname "{bridge}" drop
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr {subnet} oifname != "{bridge}" masquerade
  }}
}}
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_isolates_the_bridge() {
        let egress = Egress {
            allow: vec!["10.1.2.0/24".into(), "fd00:1::/64".into()],
            dns: nameservers("# c\nnameserver 10.0.0.2\nnameserver ::1\nsearch x\n"),
        };
        let s = ruleset(
            "berth",
            "berth0",
            crate::config::parse_subnet("10.9.0.0/24").unwrap(),
            &egress,
        );
        let pos = |r: &str| s.find(r).unwrap_or_else(|| panic!("{r} missing from\n{s}"));
        let private = pos("ip daddr { 0.0.0.0/8, 10.0.0.0/8");
        assert!(
            pos(r#"ip daddr 10.1.2.0/24 accept"#) < private,
            "allowed before refused"
        );
        assert!(pos(r#"ip6 daddr fd00:1::/64 accept"#) < private);
        assert!(pos("ip daddr 10.0.0.2 meta l4proto { tcp, udp } th dport 53 accept") < private);
        assert!(pos("ip6 daddr ::1 meta l4proto { tcp, udp } th dport 53 accept") < private);
        assert!(
            pos("ip daddr 169.254.0.0/16 drop") < pos("10.1.2.0/24 accept"),
            "metadata never allowed"
        );
        assert!(
            s.contains("192.168.0.0/16")
                && s.contains("172.16.0.0/12")
                && s.contains("100.64.0.0/10")
        );
        assert!(s.contains("fc00::/7"));
        assert!(
            s.contains(r#"iifname "berth0" drop"#),
            "node services unreachable"
        );
        assert!(
            s.contains("ip daddr 169.254.0.0/16 drop"),
            "metadata unreachable"
        );
        assert!(
            s.contains(r#"iifname "berth0" oifname "berth0" drop"#),
            "no routing between workspaces"
        );
        assert!(
            !s.contains("bw*"),
            "rules never reach other agents' bridges"
        );
        assert!(s.contains("ip saddr 10.9.0.0/24 oifname != \"berth0\" masquerade"));
        assert!(
            s.starts_with("table inet berth {}\ndelete table inet berth\n"),
            "replace is atomic and idempotent"
        );
        assert!(
            pos("ip saddr . ip daddr @workspace_allow accept") < private,
            "a workspace's own allow-list before the refusal"
        );
        assert!(pos("ip saddr . ip daddr @workspace_allow accept") > pos("169.254.0.0/16 drop"));
    }

    #[test]
    fn workspace_allow_lists_replace_the_set_at_once() {
        let ip = Ipv4Addr::new(10, 9, 0, 2);
        let s = workspace_allow_script(
            "t",
            &[
                (ip, vec!["172.16.0.0/12".into(), "10.1.0.0/16".into()]),
                (Ipv4Addr::new(10, 9, 0, 3), vec![]),
            ],
        );
        assert_eq!(
            s,
            "flush set inet t workspace_allow\nadd element inet t workspace_allow { 10.9.0.2 . 172.16.0.0/12, 10.9.0.2 . 10.1.0.0/16 }\n"
        );
        assert_eq!(
            workspace_allow_script("t", &[]),
            "flush set inet t workspace_allow\n"
        );
    }
}
