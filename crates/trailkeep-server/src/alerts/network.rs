//! Which network addresses alert notifications may be sent to.
//!
//! Channel URLs are chosen by managers, not only by the server's operator, so a notification must
//! not become a way to reach what only the server can reach: its own loopback services, the cloud
//! metadata service (link-local `169.254.169.254`), or — when the operator says so — the private
//! network. The check is made on the addresses a host name resolves to at the moment of sending
//! (a resolver that filters them), so a name that later resolves elsewhere cannot get round it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Addresses notifications may reach. Loopback, link-local, unspecified, multicast and broadcast
/// addresses are refused unless a network in `allowed` holds them; private networks (RFC 1918,
/// IPv6 unique local, shared address space) are refused too when `block_private` is set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkPolicy {
    pub allowed: Vec<IpNet>,
    pub block_private: bool,
}

impl NetworkPolicy {
    /// Parses a comma-separated list of networks (`127.0.0.0/8, ::1/128`; a bare address is a
    /// network of one).
    pub fn parse_allowed(text: &str) -> Result<Vec<IpNet>, String> {
        text.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("{s:?} is not a network such as 10.0.0.0/8 or an address"))
            })
            .collect()
    }

    /// `None` when `ip` may be reached, else why not.
    pub fn refusal(&self, ip: IpAddr) -> Option<&'static str> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        if self.allowed.iter().any(|n| n.contains(&ip)) {
            return None;
        }
        match ip {
            IpAddr::V4(v4) => {
                if v4.is_loopback() {
                    Some("a loopback address")
                } else if v4.is_link_local() {
                    Some("a link-local address (such as a cloud metadata service)")
                } else if v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast() {
                    Some("not a unicast address")
                } else if v4.is_private() || (v4.octets()[0] == 100 && v4.octets()[1] & 0xc0 == 64)
                {
                    self.block_private.then_some("a private address")
                } else {
                    None
                }
            }
            IpAddr::V6(v6) => {
                let first = v6.segments()[0];
                if v6.is_loopback() {
                    Some("a loopback address")
                } else if first & 0xffc0 == 0xfe80 {
                    Some("a link-local address")
                } else if v6.is_unspecified() || v6.is_multicast() {
                    Some("not a unicast address")
                } else if first & 0xfe00 == 0xfc00 {
                    self.block_private.then_some("a private address")
                } else {
                    None
                }
            }
        }
    }

    /// Checks the host of `url` when it is an address literal (names are checked as they
    /// resolve, by [`GuardedResolver`]).
    pub fn check_url(&self, url: &str) -> Result<(), String> {
        let Ok(parsed) = reqwest::Url::parse(url) else {
            return Ok(()); // the HTTP client reports a bad URL itself
        };
        let host = parsed.host_str().unwrap_or_default();
        let Ok(ip) = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        else {
            return Ok(());
        };
        match self.refusal(ip) {
            None => Ok(()),
            Some(why) => Err(refused_message(&ip.to_string(), ip, why)),
        }
    }
}

fn refused_message(host: &str, ip: IpAddr, why: &str) -> String {
    format!(
        "notifications may not be sent to {host} ({ip} is {why}); the server's operator can allow \
         it with --notify-allow-networks"
    )
}

/// A resolver that drops the addresses the policy refuses, and fails when none is left.
#[derive(Debug)]
pub struct GuardedResolver {
    pub policy: NetworkPolicy,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let permitted: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| match policy.refusal(a.ip()) {
                    None => true,
                    Some(why) => {
                        refused.get_or_insert((a.ip(), why));
                        false
                    }
                })
                .collect();
            if permitted.is_empty() {
                let message = match refused {
                    Some((ip, why)) => refused_message(&host, ip, why),
                    None => format!("{host} has no address"),
                };
                return Err(message.into());
            }
            Ok(Box::new(permitted.into_iter()) as Addrs)
        })
    }
}

/// The resolver for an HTTP client that follows `policy`.
pub fn resolver(policy: &NetworkPolicy) -> Arc<GuardedResolver> {
    Arc::new(GuardedResolver {
        policy: policy.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_loopback_link_local_and_optionally_private() {
        let open = NetworkPolicy::default();
        for ip in [
            "127.0.0.1",
            "::1",
            "169.254.169.254",
            "fe80::1",
            "0.0.0.0",
            "224.0.0.1",
            "::ffff:127.0.0.1",
        ] {
            assert!(open.refusal(ip.parse().unwrap()).is_some(), "{ip}");
        }
        for ip in [
            "10.1.2.3",
            "192.168.1.1",
            "100.64.0.1",
            "fd00::1",
            "8.8.8.8",
            "2001:db8::1",
        ] {
            assert!(open.refusal(ip.parse().unwrap()).is_none(), "{ip}");
        }
        let strict = NetworkPolicy {
            block_private: true,
            ..Default::default()
        };
        for ip in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "fd00::1",
        ] {
            assert!(strict.refusal(ip.parse().unwrap()).is_some(), "{ip}");
        }
        let tests = NetworkPolicy {
            allowed: NetworkPolicy::parse_allowed("127.0.0.0/8, ::1").unwrap(),
            block_private: true,
        };
        assert!(tests.refusal("127.0.0.1".parse().unwrap()).is_none());
        assert!(tests.refusal("::1".parse().unwrap()).is_none());
        assert!(tests.refusal("169.254.169.254".parse().unwrap()).is_some());
        assert!(NetworkPolicy::parse_allowed("10.0.0.0/33").is_err());
        assert!(tests.check_url("http://127.0.0.1:9/x").is_ok());
        let e = open
            .check_url("http://169.254.169.254/latest/meta-data")
            .unwrap_err();
        assert!(
            e.contains("link-local") && e.contains("--notify-allow-networks"),
            "{e}"
        );
        assert!(open.check_url("http://[::1]:80/").is_err());
        assert!(open.check_url("https://hooks.example.com/x").is_ok());
    }
}
