//! SSRF guard for outbound HTTP deliveries (DESIGN §8).
//!
//! Outbound event rules send requests to operator- or user-supplied URLs, so a URL such as
//! `http://169.254.169.254/latest/meta-data/` or `http://localhost:6379/` must not let a rule
//! author reach the gateway host, the internal network or the cloud metadata service. The guard
//! has two layers, both driven by one [`AddressPolicy`]:
//!
//! 1. [`check_url`] runs before a request is built. It allows only `http` and `https`, and when
//!    the host is an IP literal (`http://127.0.0.1/`, `http://[::1]/`) it judges that address
//!    directly, because reqwest connects to IP literals without calling the DNS resolver.
//! 2. [`GuardedResolver`] is installed as reqwest's DNS resolver. It resolves host names and
//!    drops every address the policy refuses, so the address that is actually connected to is
//!    always checked *after* DNS resolution. This defeats DNS rebinding and names that point at
//!    internal addresses; a name that resolves only to refused addresses fails to resolve.
//!
//! [`AddressPolicy::refusal`] classifies an address. Refused, unless it falls in one of the
//! configured `outbound.allowed_cidrs`:
//!
//! * IPv4: unspecified `0.0.0.0/8`, loopback `127.0.0.0/8`, private `10.0.0.0/8`,
//!   `172.16.0.0/12`, `192.168.0.0/16`, link-local `169.254.0.0/16` (cloud metadata), CGNAT
//!   `100.64.0.0/10`, multicast `224.0.0.0/4`, broadcast `255.255.255.255`, reserved
//!   `240.0.0.0/4`, benchmarking `198.18.0.0/15` and IETF protocol assignments `192.0.0.0/24`.
//! * IPv6: unspecified `::`, loopback `::1`, unique-local `fc00::/7`, link-local `fe80::/10`,
//!   site-local `fec0::/10`, multicast `ff00::/8` and local-use NAT64 `64:ff9b:1::/48`.
//! * IPv6 forms that embed an IPv4 address (IPv4-mapped `::ffff:0:0/96`, IPv4-compatible
//!   `::/96`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) are judged by the embedded IPv4 address,
//!   so `::ffff:127.0.0.1` is refused as loopback.
//!
//! The allow list is matched against the address as given and, for the embedding forms, also
//! against the embedded IPv4 address: allowing `127.0.0.0/8` also allows `::ffff:127.0.0.1`.
//!
//! The checks are written out here rather than using `Ipv4Addr::is_shared`, `is_global` and
//! friends, which are unstable in `std`.
//!
//! Callers must also keep the other ways around the resolver closed: build the client without
//! proxies (a proxy resolves the target itself) and run [`check_url`] on every redirect target
//! (or disable redirects), since a redirect to an IP literal never reaches the resolver.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use ipnet::IpNet;
use url::{Host, Url};

/// Which destination addresses outbound requests may connect to.
///
/// Everything publicly routable is allowed; the special-purpose ranges listed in the module
/// documentation are refused unless they fall inside one of the configured allowed CIDRs
/// (config `outbound.allowed_cidrs`). The default policy allows no special-purpose range.
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    allowed: Vec<IpNet>,
}

impl AddressPolicy {
    /// Parses CIDRs like `"127.0.0.0/8"` or `"::1/128"`; a bare IP (`"10.1.2.3"`) means a single
    /// host. Surrounding whitespace is ignored. `Err(String)` names the bad entry.
    pub fn new(allowed_cidrs: &[String]) -> Result<Self, String> {
        let allowed = allowed_cidrs
            .iter()
            .map(|entry| parse_cidr(entry))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { allowed })
    }

    /// `None` when `ip` may be connected to; `Some(reason)` otherwise, e.g.
    /// `"127.0.0.1 is a loopback address"`.
    pub fn refusal(&self, ip: IpAddr) -> Option<String> {
        let embedded = match ip {
            IpAddr::V4(_) => None,
            IpAddr::V6(v6) => embedded_ipv4(v6),
        };
        if self.is_allowed(ip) || embedded.is_some_and(|(v4, _)| self.is_allowed(IpAddr::V4(v4))) {
            return None;
        }
        match (ip, embedded) {
            (IpAddr::V4(v4), _) => classify_v4(v4).map(|kind| format!("{ip} is {kind}")),
            (IpAddr::V6(_), Some((v4, form))) => classify_v4(v4)
                .map(|kind| format!("{ip} embeds {v4} ({form} address), which is {kind}")),
            (IpAddr::V6(v6), None) => classify_v6(v6).map(|kind| format!("{ip} is {kind}")),
        }
    }

    fn is_allowed(&self, ip: IpAddr) -> bool {
        self.allowed.iter().any(|net| net.contains(&ip))
    }
}

/// Parses one allow-list entry: a CIDR, or a bare IP meaning a single host.
fn parse_cidr(entry: &str) -> Result<IpNet, String> {
    let text = entry.trim();
    if let Ok(net) = IpNet::from_str(text) {
        return Ok(net.trunc());
    }
    IpAddr::from_str(text)
        .map(IpNet::from)
        .map_err(|_| format!("invalid CIDR or IP address in outbound.allowed_cidrs: {entry:?}"))
}

/// Describes why an IPv4 address is refused (`"a loopback address"`), or `None` if it is an
/// ordinary routable address.
fn classify_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    let kind = match (a, b, c) {
        (0, _, _) => "an unspecified (0.0.0.0/8) address",
        (127, _, _) => "a loopback address",
        (10, _, _) => "a private address",
        (172, 16..=31, _) => "a private address",
        (192, 168, _) => "a private address",
        (169, 254, _) => "a link-local address",
        (100, 64..=127, _) => "a carrier-grade NAT (100.64.0.0/10) address",
        (224..=239, _, _) => "a multicast address",
        _ if ip == Ipv4Addr::BROADCAST => "the broadcast address",
        (240..=255, _, _) => "a reserved (240.0.0.0/4) address",
        (198, 18..=19, _) => "a benchmarking (198.18.0.0/15) address",
        (192, 0, 0) => "an IETF protocol assignment (192.0.0.0/24) address",
        _ => return None,
    };
    Some(kind)
}

/// Describes why an IPv6 address that embeds no IPv4 address is refused, or `None` if it is an
/// ordinary routable address.
fn classify_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    let kind = if ip.is_unspecified() {
        "an unspecified address"
    } else if ip.is_loopback() {
        "a loopback address"
    } else if s[0] & 0xfe00 == 0xfc00 {
        "a unique-local address"
    } else if s[0] & 0xffc0 == 0xfe80 {
        "a link-local address"
    } else if s[0] & 0xffc0 == 0xfec0 {
        "a site-local address"
    } else if s[0] & 0xff00 == 0xff00 {
        "a multicast address"
    } else if s[0] == 0x0064 && s[1] == 0xff9b && s[2] == 0x0001 {
        "a local-use NAT64 (64:ff9b:1::/48) address"
    } else {
        return None;
    };
    Some(kind)
}

/// The IPv4 address embedded in an IPv6 address, with the name of the embedding form.
///
/// `::` and `::1` are not treated as IPv4-compatible addresses; they are judged as IPv6.
fn embedded_ipv4(ip: Ipv6Addr) -> Option<(Ipv4Addr, &'static str)> {
    let s = ip.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some((low, "IPv4-mapped")),
        [0, 0, 0, 0, 0, 0, _, _] if !ip.is_unspecified() && !ip.is_loopback() => {
            Some((low, "IPv4-compatible"))
        }
        [0x0064, 0xff9b, 0, 0, 0, 0, _, _] => Some((low, "NAT64")),
        [0x2002, hi, lo, ..] => Some((
            Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8),
            "6to4",
        )),
        _ => None,
    }
}

/// Checks a URL before sending: the scheme must be `http` or `https` (else `Err`), and if the
/// host is an IP literal (v4 or `[v6]`) it must pass [`AddressPolicy::refusal`] (reqwest does
/// not call the DNS resolver for IP literals). Host names are checked later by
/// [`GuardedResolver`]; this function does no DNS. Returns `Err(reason)` for a refusal.
pub fn check_url(policy: &AddressPolicy, url: &Url) -> Result<(), String> {
    match url.scheme() {
        "http" | "https" => {}
        other => {
            return Err(format!(
                "URL scheme {other:?} is not allowed; only http and https are"
            ))
        }
    }
    let ip = match url.host() {
        None => return Err(format!("URL {url} has no host")),
        Some(Host::Domain(_)) => return Ok(()),
        Some(Host::Ipv4(v4)) => IpAddr::V4(v4),
        Some(Host::Ipv6(v6)) => IpAddr::V6(v6),
    };
    match policy.refusal(ip) {
        None => Ok(()),
        Some(reason) => Err(reason),
    }
}

/// Why [`GuardedResolver`] could not produce an address. Reaches callers boxed inside the
/// `reqwest::Error` source chain, where it can be found with `downcast_ref`.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The name did not resolve at all (DNS failure, unknown host).
    #[error("could not resolve {host}: {source}")]
    Lookup {
        /// The host name that was looked up.
        host: String,
        /// The resolver's error.
        source: std::io::Error,
    },
    /// The name resolved, but to no address at all.
    #[error("{host} resolves to no addresses")]
    NoAddresses {
        /// The host name that was looked up.
        host: String,
    },
    /// Every address the name resolves to is refused by the [`AddressPolicy`].
    #[error("{host} resolves only to refused addresses: {}", Refusals(.reasons))]
    Refused {
        /// The host name that was looked up.
        host: String,
        /// One reason per distinct refused address, e.g. `"127.0.0.1 is a loopback address"`.
        reasons: Vec<String>,
    },
}

/// Joins refusal reasons with `"; "` for [`ResolveError::Refused`]'s message.
struct Refusals<'a>(&'a [String]);

impl fmt::Display for Refusals<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("; "))
    }
}

/// A reqwest DNS resolver that resolves with `tokio::net::lookup_host((host, 0))` and drops
/// every address the [`AddressPolicy`] refuses. When none is left it fails with
/// [`ResolveError::Refused`], whose message says which addresses were refused and why (e.g.
/// `"localhost resolves only to refused addresses: 127.0.0.1 is a loopback address"`). So the
/// address actually connected to is always checked, after DNS.
///
/// Install it with `reqwest::ClientBuilder::dns_resolver(Arc::new(GuardedResolver::new(..)))`.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    policy: Arc<AddressPolicy>,
}

impl GuardedResolver {
    /// A resolver that enforces `policy` on every resolved address.
    pub fn new(policy: Arc<AddressPolicy>) -> Self {
        Self { policy }
    }

    /// Resolves `host` and keeps only the addresses the policy allows.
    async fn resolve_allowed(
        policy: &AddressPolicy,
        host: String,
    ) -> Result<Vec<SocketAddr>, ResolveError> {
        let lookup = tokio::net::lookup_host((host.as_str(), 0))
            .await
            .map(|addrs| addrs.collect::<Vec<SocketAddr>>());
        let resolved = match lookup {
            Ok(addrs) => addrs,
            Err(source) => return Err(ResolveError::Lookup { host, source }),
        };
        let mut allowed = Vec::new();
        let mut reasons: Vec<String> = Vec::new();
        for addr in resolved {
            match policy.refusal(addr.ip()) {
                None => {
                    if !allowed.contains(&addr) {
                        allowed.push(addr);
                    }
                }
                Some(reason) => {
                    if !reasons.contains(&reason) {
                        reasons.push(reason);
                    }
                }
            }
        }
        if !allowed.is_empty() {
            Ok(allowed)
        } else if reasons.is_empty() {
            Err(ResolveError::NoAddresses { host })
        } else {
            Err(ResolveError::Refused { host, reasons })
        }
    }
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = Arc::clone(&self.policy);
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = Self::resolve_allowed(&policy, host).await?;
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::dns::Resolve;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test IP parses")
    }

    fn policy(cidrs: &[&str]) -> AddressPolicy {
        let cidrs: Vec<String> = cidrs.iter().map(|s| s.to_string()).collect();
        AddressPolicy::new(&cidrs).expect("test CIDRs parse")
    }

    fn url(text: &str) -> Url {
        Url::parse(text).expect("test URL parses")
    }

    #[test]
    fn refuses_special_purpose_addresses() {
        let policy = AddressPolicy::default();
        for (addr, expect) in [
            ("10.0.0.1", "private"),
            ("192.168.1.1", "private"),
            ("172.16.5.4", "private"),
            ("172.31.255.255", "private"),
            ("169.254.169.254", "link-local"),
            ("100.64.0.1", "carrier-grade NAT"),
            ("100.127.255.255", "carrier-grade NAT"),
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "unspecified"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("240.0.0.1", "reserved"),
            ("198.18.0.1", "benchmarking"),
            ("198.19.255.255", "benchmarking"),
            ("192.0.0.8", "IETF protocol assignment"),
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("fd00::1", "unique-local"),
            ("fc00::1", "unique-local"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("fec0::1", "site-local"),
            ("ff02::1", "multicast"),
            ("ff0e::1", "multicast"),
            ("64:ff9b:1::1", "local-use NAT64"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "link-local"),
            ("::127.0.0.1", "loopback"),
            ("::0.0.0.2", "unspecified"),
            ("64:ff9b::a00:1", "private"),
            ("64:ff9b::127.0.0.1", "loopback"),
            ("2002:7f00:1::", "loopback"),
            ("2002:a9fe:a9fe::1", "link-local"),
        ] {
            let reason = policy
                .refusal(ip(addr))
                .unwrap_or_else(|| panic!("{addr} should be refused"));
            assert!(
                reason.contains(expect),
                "reason for {addr} is {reason:?}, expected it to mention {expect:?}"
            );
        }
    }

    #[test]
    fn refusal_reasons_name_the_address() {
        let policy = AddressPolicy::default();
        assert_eq!(
            policy.refusal(ip("127.0.0.1")).as_deref(),
            Some("127.0.0.1 is a loopback address")
        );
        assert_eq!(
            policy.refusal(ip("::ffff:127.0.0.1")).as_deref(),
            Some("::ffff:127.0.0.1 embeds 127.0.0.1 (IPv4-mapped address), which is a loopback address")
        );
        assert_eq!(
            policy.refusal(ip("64:ff9b::a00:1")).as_deref(),
            Some("64:ff9b::a00:1 embeds 10.0.0.1 (NAT64 address), which is a private address")
        );
    }

    #[test]
    fn allows_public_addresses() {
        let policy = AddressPolicy::default();
        for addr in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700::1111",
            "100.128.0.1",
            "100.63.255.255",
            "172.32.0.1",
            "172.15.255.255",
            "169.255.0.1",
            "192.0.1.1",
            "198.20.0.1",
            "223.255.255.255",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "2001:4860:4860::8888",
        ] {
            assert_eq!(policy.refusal(ip(addr)), None, "{addr} should be allowed");
        }
    }

    #[test]
    fn allowed_cidrs_override_refusals() {
        let policy = policy(&["127.0.0.0/8", "::1/128"]);
        assert_eq!(policy.refusal(ip("127.0.0.1")), None);
        assert_eq!(policy.refusal(ip("127.1.2.3")), None);
        assert_eq!(policy.refusal(ip("::ffff:127.0.0.1")), None);
        assert_eq!(policy.refusal(ip("::1")), None);
        assert!(policy.refusal(ip("10.0.0.1")).is_some());
        assert!(policy.refusal(ip("::ffff:10.0.0.1")).is_some());
        assert!(policy.refusal(ip("fd00::1")).is_some());

        let only_v6_loopback =
            AddressPolicy::new(&["::1/128".to_string()]).expect("::1/128 parses");
        assert_eq!(only_v6_loopback.refusal(ip("::1")), None);
        assert!(only_v6_loopback.refusal(ip("127.0.0.1")).is_some());
    }

    #[test]
    fn bare_ip_allows_a_single_host() {
        let policy = policy(&[" 10.1.2.3 ", "fd00::5"]);
        assert_eq!(policy.refusal(ip("10.1.2.3")), None);
        assert!(policy.refusal(ip("10.1.2.4")).is_some());
        assert_eq!(policy.refusal(ip("fd00::5")), None);
        assert!(policy.refusal(ip("fd00::6")).is_some());
    }

    #[test]
    fn bad_cidr_names_the_entry() {
        for bad in ["10.0.0.0/33", "not-a-cidr", "10.0.0/8", ""] {
            let err = AddressPolicy::new(&["127.0.0.0/8".to_string(), bad.to_string()])
                .expect_err("bad CIDR is rejected");
            assert!(
                err.contains(&format!("{bad:?}")),
                "error {err:?} should name {bad:?}"
            );
        }
    }

    #[test]
    fn check_url_refuses_other_schemes() {
        let policy = AddressPolicy::default();
        for bad in [
            "ftp://example.com/file",
            "file:///etc/passwd",
            "gopher://example.com/",
        ] {
            let err = check_url(&policy, &url(bad)).expect_err("scheme refused");
            assert!(err.contains("scheme"), "{err}");
        }
    }

    #[test]
    fn check_url_refuses_ip_literals() {
        let policy = AddressPolicy::default();
        for bad in [
            "http://127.0.0.1/",
            "https://127.0.0.1:8443/hook",
            "http://[::1]/",
            "http://[::ffff:7f00:1]/",
            "http://169.254.169.254/latest/meta-data/",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://127.0.0.1./",
            "http://[fe80::1]/",
        ] {
            let err = check_url(&policy, &url(bad))
                .err()
                .unwrap_or_else(|| panic!("{bad} should be refused"));
            assert!(!err.is_empty());
        }
        let err = check_url(&policy, &url("http://[::ffff:7f00:1]/")).expect_err("refused");
        assert!(err.contains("loopback"), "{err}");
    }

    #[test]
    fn check_url_accepts_names_and_public_literals() {
        let policy = AddressPolicy::default();
        for good in [
            "https://example.com/",
            "http://localhost:8080/", // host names are judged by the resolver, not here
            "http://8.8.8.8/",
            "https://[2606:4700::1111]/",
        ] {
            assert_eq!(check_url(&policy, &url(good)), Ok(()), "{good}");
        }
        let allowing = policy_allowing_loopback();
        assert_eq!(check_url(&allowing, &url("http://127.0.0.1:9000/")), Ok(()));
        assert_eq!(check_url(&allowing, &url("http://[::1]:9000/")), Ok(()));
    }

    fn policy_allowing_loopback() -> AddressPolicy {
        policy(&["127.0.0.0/8", "::1/128"])
    }

    fn name(host: &str) -> reqwest::dns::Name {
        host.parse().expect("valid DNS name")
    }

    #[tokio::test]
    async fn resolver_refuses_localhost_by_default() {
        let resolver = GuardedResolver::new(Arc::new(AddressPolicy::default()));
        let err = match resolver.resolve(name("localhost")).await {
            Ok(addrs) => panic!("localhost resolved to {:?}", addrs.collect::<Vec<_>>()),
            Err(err) => err,
        };
        let message = err.to_string();
        assert!(
            message.starts_with("localhost resolves only to refused addresses: "),
            "{message}"
        );
        assert!(message.contains("loopback"), "{message}");
        assert!(matches!(
            err.downcast_ref::<ResolveError>(),
            Some(ResolveError::Refused { .. })
        ));
    }

    #[tokio::test]
    async fn resolver_passes_allowed_loopback() {
        let resolver = GuardedResolver::new(Arc::new(policy_allowing_loopback()));
        let addrs: Vec<SocketAddr> = resolver
            .resolve(name("localhost"))
            .await
            .expect("localhost resolves when loopback is allowed")
            .collect();
        assert!(!addrs.is_empty());
        assert!(
            addrs.iter().all(|a| a.ip().is_loopback()),
            "non-loopback address in {addrs:?}"
        );
    }
}
