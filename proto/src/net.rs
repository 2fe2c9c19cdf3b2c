//! Network values shared by the coordinator's configuration and the agent.

use std::net::Ipv4Addr;

/// Parses an IPv4 range in network form ("172.16.0.0/12"): what a tier's
/// egress allow-list holds (workspaces have IPv4 addresses only).
pub fn parse_ipv4_cidr(s: &str) -> Result<(Ipv4Addr, u8), String> {
    let (addr, prefix) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?}: expected a.b.c.d/n"))?;
    let addr: Ipv4Addr = addr
        .parse()
        .map_err(|_| format!("{s:?}: not an IPv4 address"))?;
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| *p <= 32)
        .ok_or_else(|| format!("{s:?}: prefix must be 0 to 32"))?;
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    if u32::from(addr) & !mask != 0 {
        return Err(format!(
            "{s:?}: host bits set (network form, e.g. {}/{prefix})",
            Ipv4Addr::from(u32::from(addr) & mask)
        ));
    }
    Ok((addr, prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_in_network_form_only() {
        assert_eq!(
            parse_ipv4_cidr("172.16.0.0/12"),
            Ok((Ipv4Addr::new(172, 16, 0, 0), 12))
        );
        assert!(parse_ipv4_cidr("0.0.0.0/0").is_ok());
        assert!(parse_ipv4_cidr("10.1.2.3/32").is_ok());
        for bad in [
            "172.16.0.1/12",
            "fd00::/8",
            "10.0.0.0",
            "10.0.0.0/33",
            "x/8",
            "",
        ] {
            assert!(parse_ipv4_cidr(bad).is_err(), "{bad}");
        }
        assert!(parse_ipv4_cidr("172.16.0.1/12")
            .unwrap_err()
            .contains("172.16.0.0/12"));
    }
}
