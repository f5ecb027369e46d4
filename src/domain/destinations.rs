//! Where webhooks may be delivered: the address ranges a delivery never goes to (loopback,
//! private, link-local and the cloud metadata address, …) and the operator's allow-list
//! (`GRANULO_WEBHOOK_ALLOW`) of hosts and networks that deliver inside a site's own network.
//! Pure: resolving names and connecting is `services::webhooks`'s business.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// An address range no webhook is delivered to (unless the allow-list says otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    Unspecified,
    ThisNetwork,
    Loopback,
    Private,
    SharedCgnat,
    LinkLocal,
    CloudMetadata,
    ProtocolAssignments,
    Documentation,
    Benchmarking,
    Relay6to4,
    Multicast,
    Reserved,
    Broadcast,
    UniqueLocal,
    SiteLocal,
    Discard,
    Teredo,
    Ipv4Compatible,
    Nat64Local,
    NotGlobalUnicast,
}

impl Range {
    /// What the range is, for people (the refusal names it).
    pub fn describe(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified address",
            Self::ThisNetwork => "\"this network\" (0.0.0.0/8)",
            Self::Loopback => "loopback",
            Self::Private => "private network (RFC 1918)",
            Self::SharedCgnat => "shared address space / CGNAT (100.64.0.0/10)",
            Self::LinkLocal => "link-local",
            Self::CloudMetadata => "link-local cloud metadata address (169.254.169.254)",
            Self::ProtocolAssignments => "IETF protocol assignments (reserved)",
            Self::Documentation => "documentation range (reserved)",
            Self::Benchmarking => "benchmarking range (reserved)",
            Self::Relay6to4 => "6to4 relay or prefix (deprecated)",
            Self::Multicast => "multicast",
            Self::Reserved => "reserved for future use (240.0.0.0/4)",
            Self::Broadcast => "limited broadcast (255.255.255.255)",
            Self::UniqueLocal => "unique-local (fc00::/7)",
            Self::SiteLocal => "site-local (fec0::/10, deprecated)",
            Self::Discard => "discard-only (100::/64)",
            Self::Teredo => "Teredo (2001::/32)",
            Self::Ipv4Compatible => "IPv4-compatible IPv6 (::/96, deprecated)",
            Self::Nat64Local => "local-use NAT64 (64:ff9b:1::/48)",
            Self::NotGlobalUnicast => "outside IPv6 global unicast (2000::/3)",
        }
    }
}

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len)
}

const fn v6(s: [u16; 8], len: u8) -> Ipv6Net {
    Ipv6Net::new_assert(Ipv6Addr::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]), len)
}

/// IPv4 special-purpose ranges (IANA registry, RFC 6890), most specific first.
const V4: &[(Ipv4Net, Range)] = &[
    (v4(0, 0, 0, 0, 32), Range::Unspecified),
    (v4(255, 255, 255, 255, 32), Range::Broadcast),
    (v4(169, 254, 169, 254, 32), Range::CloudMetadata),
    (v4(0, 0, 0, 0, 8), Range::ThisNetwork),
    (v4(10, 0, 0, 0, 8), Range::Private),
    (v4(100, 64, 0, 0, 10), Range::SharedCgnat),
    (v4(127, 0, 0, 0, 8), Range::Loopback),
    (v4(169, 254, 0, 0, 16), Range::LinkLocal),
    (v4(172, 16, 0, 0, 12), Range::Private),
    (v4(192, 0, 0, 0, 24), Range::ProtocolAssignments),
    (v4(192, 0, 2, 0, 24), Range::Documentation),
    (v4(192, 88, 99, 0, 24), Range::Relay6to4),
    (v4(192, 168, 0, 0, 16), Range::Private),
    (v4(198, 18, 0, 0, 15), Range::Benchmarking),
    (v4(198, 51, 100, 0, 24), Range::Documentation),
    (v4(203, 0, 113, 0, 24), Range::Documentation),
    (v4(224, 0, 0, 0, 4), Range::Multicast),
    (v4(240, 0, 0, 0, 4), Range::Reserved),
];

/// IPv6 special-purpose ranges, most specific first; the IPv4-embedding forms are handled in
/// [`classify`] before these.
const V6: &[(Ipv6Net, Range)] = &[
    (v6([0, 0, 0, 0, 0, 0, 0, 0], 128), Range::Unspecified),
    (v6([0, 0, 0, 0, 0, 0, 0, 1], 128), Range::Loopback),
    (v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48), Range::Nat64Local),
    (v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64), Range::Discard),
    (v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32), Range::Teredo),
    (v6([0x2001, 2, 0, 0, 0, 0, 0, 0], 48), Range::Benchmarking),
    (v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23), Range::ProtocolAssignments),
    (v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32), Range::Documentation),
    (v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20), Range::Documentation),
    (v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16), Range::Relay6to4),
    (v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7), Range::UniqueLocal),
    (v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), Range::LinkLocal),
    (v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10), Range::SiteLocal),
    (v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), Range::Multicast),
];

const MAPPED: Ipv6Net = v6([0, 0, 0, 0, 0, 0xffff, 0, 0], 96);
const COMPATIBLE: Ipv6Net = v6([0, 0, 0, 0, 0, 0, 0, 0], 96);
const NAT64: Ipv6Net = v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96);
const GLOBAL_UNICAST: Ipv6Net = v6([0x2000, 0, 0, 0, 0, 0, 0, 0], 3);

/// The range `ip` falls in, or `None` for an ordinary public address. An IPv6 address that
/// carries an IPv4 address (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`, NAT64
/// `64:ff9b::a.b.c.d`) is judged by the IPv4 address it reaches.
pub fn classify(ip: IpAddr) -> Option<Range> {
    special(ip).map(|(r, _)| r)
}

/// The CIDR of `ip`'s range as written in refusals, e.g. `127.0.0.0/8`.
pub fn range_cidr(ip: IpAddr) -> Option<String> {
    special(ip).map(|(_, net)| net.to_string())
}

fn special(ip: IpAddr) -> Option<(Range, IpNet)> {
    match ip {
        IpAddr::V4(a) => special_v4(a),
        IpAddr::V6(a) => special_v6(a),
    }
}

fn special_v4(a: Ipv4Addr) -> Option<(Range, IpNet)> {
    V4.iter()
        .find(|(net, _)| net.contains(&a))
        .map(|(net, r)| (*r, IpNet::V4(*net)))
}

fn embedded_v4(a: Ipv6Addr) -> Ipv4Addr {
    let o = a.octets();
    Ipv4Addr::new(o[12], o[13], o[14], o[15])
}

fn special_v6(a: Ipv6Addr) -> Option<(Range, IpNet)> {
    let listed = |nets: &[(Ipv6Net, Range)]| {
        nets.iter()
            .find(|(net, _)| net.contains(&a))
            .map(|(net, r)| (*r, IpNet::V6(*net)))
    };
    // `::` and `::1` before the IPv4-compatible block that holds them.
    if let Some(found) = listed(&V6[..2]) {
        return Some(found);
    }
    if MAPPED.contains(&a) || NAT64.contains(&a) {
        return special_v4(embedded_v4(a));
    }
    if COMPATIBLE.contains(&a) {
        // Deprecated (RFC 4291): nothing legitimate is reached this way.
        return special_v4(embedded_v4(a)).or(Some((Range::Ipv4Compatible, IpNet::V6(COMPATIBLE))));
    }
    listed(V6)
        .or_else(|| (!GLOBAL_UNICAST.contains(&a)).then_some((Range::NotGlobalUnicast, IpNet::V6(GLOBAL_UNICAST))))
}

/// `GRANULO_WEBHOOK_ALLOW`: hosts (exact names) and networks (CIDRs, or single addresses) that
/// webhooks may reach although they are internal, and over plain `http://`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    hosts: Vec<String>,
    nets: Vec<IpNet>,
}

impl AllowList {
    /// Comma-separated entries: `hooks.lab.internal`, `10.20.0.0/16`, `192.168.1.7`, `fd00::/8`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut list = Self::default();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if let Ok(net) = entry.parse::<IpNet>() {
                list.nets.push(net.trunc());
            } else if let Ok(ip) = entry.trim_matches(['[', ']']).parse::<IpAddr>() {
                list.nets.push(IpNet::from(ip));
            } else if is_hostname(entry) {
                list.hosts.push(normalize_host(entry));
            } else {
                return Err(format!("{entry:?} is neither a host name nor an address or CIDR"));
            }
        }
        Ok(list)
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty() && self.nets.is_empty()
    }

    /// Whether the host name itself is allowed (its addresses are then not checked).
    pub fn allows_host(&self, host: &str) -> bool {
        let host = normalize_host(host);
        self.hosts.contains(&host)
    }

    /// Whether `ip` lies in an allowed network.
    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|n| n.contains(&ip))
    }
}

/// `::ffff:a.b.c.d` is `a.b.c.d` for the allow-list.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(a) if MAPPED.contains(&a) => IpAddr::V4(embedded_v4(a)),
        other => other,
    }
}

fn normalize_host(host: &str) -> String {
    host.trim().trim_end_matches('.').to_ascii_lowercase()
}

fn is_hostname(s: &str) -> bool {
    let s = s.trim_end_matches('.');
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

/// Why a destination is refused. The message names the host and the range, never the resolved
/// address (an admin could otherwise map internal names through refusals).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "{host}: resolves to an address in the {range} range {cidr}, where webhooks are not delivered (GRANULO_WEBHOOK_ALLOW lists the exceptions)"
    )]
    Range {
        host: String,
        range: &'static str,
        cidr: String,
    },
    #[error("{host}: http:// is refused; use https:// (or list the host in GRANULO_WEBHOOK_ALLOW)")]
    PlainHttp { host: String },
    #[error("{host}: the host does not resolve")]
    Unresolved { host: String },
    #[error("the URL is not an http(s) URL with a host")]
    NotHttp,
}

/// Check one address of `host` (`host` may be the address itself). `plain_http`: the URL is
/// `http://`, which only allowed networks may use.
pub fn check_address(host: &str, ip: IpAddr, allow: &AllowList, plain_http: bool) -> Result<(), Refusal> {
    if allow.allows_host(host) || allow.allows_ip(ip) {
        return Ok(());
    }
    if let Some(range) = classify(ip) {
        return Err(Refusal::Range {
            host: host.to_owned(),
            range: range.describe(),
            cidr: range_cidr(ip).unwrap_or_default(),
        });
    }
    if plain_http {
        return Err(Refusal::PlainHttp { host: host.to_owned() });
    }
    Ok(())
}

/// Check every address a name resolved to: one refused address refuses the name.
pub fn check_addresses(host: &str, ips: &[IpAddr], allow: &AllowList, plain_http: bool) -> Result<(), Refusal> {
    if allow.allows_host(host) {
        return Ok(());
    }
    if ips.is_empty() {
        return Err(Refusal::Unresolved { host: host.to_owned() });
    }
    ips.iter()
        .try_for_each(|ip| check_address(host, *ip, allow, plain_http))
}

/// The name lookup deliveries use (the system resolver in production; tests inject one that
/// answers what they need, e.g. a rebinding one).
pub trait NameLookup: Send + Sync {
    fn lookup(
        &self,
        host: &str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<Vec<IpAddr>>> + Send>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    /// Every range, its boundaries and the addresses just outside them.
    #[test]
    fn classifies_every_special_range() {
        use Range::*;
        let table: &[(&str, Option<Range>)] = &[
            ("0.0.0.0", Some(Unspecified)),
            ("0.0.0.1", Some(ThisNetwork)),
            ("0.255.255.255", Some(ThisNetwork)),
            ("1.0.0.0", None),
            ("9.255.255.255", None),
            ("10.0.0.0", Some(Private)),
            ("10.255.255.255", Some(Private)),
            ("11.0.0.0", None),
            ("100.63.255.255", None),
            ("100.64.0.0", Some(SharedCgnat)),
            ("100.127.255.255", Some(SharedCgnat)),
            ("100.128.0.0", None),
            ("126.255.255.255", None),
            ("127.0.0.0", Some(Loopback)),
            ("127.0.0.1", Some(Loopback)),
            ("127.255.255.255", Some(Loopback)),
            ("128.0.0.0", None),
            ("169.253.255.255", None),
            ("169.254.0.0", Some(LinkLocal)),
            ("169.254.169.254", Some(CloudMetadata)),
            ("169.254.169.253", Some(LinkLocal)),
            ("169.254.255.255", Some(LinkLocal)),
            ("169.255.0.0", None),
            ("172.15.255.255", None),
            ("172.16.0.0", Some(Private)),
            ("172.31.255.255", Some(Private)),
            ("172.32.0.0", None),
            ("191.255.255.255", None),
            ("192.0.0.0", Some(ProtocolAssignments)),
            ("192.0.0.255", Some(ProtocolAssignments)),
            ("192.0.1.0", None),
            ("192.0.2.0", Some(Documentation)),
            ("192.0.2.255", Some(Documentation)),
            ("192.0.3.0", None),
            ("192.88.98.255", None),
            ("192.88.99.0", Some(Relay6to4)),
            ("192.88.99.255", Some(Relay6to4)),
            ("192.88.100.0", None),
            ("192.167.255.255", None),
            ("192.168.0.0", Some(Private)),
            ("192.168.255.255", Some(Private)),
            ("192.169.0.0", None),
            ("198.17.255.255", None),
            ("198.18.0.0", Some(Benchmarking)),
            ("198.19.255.255", Some(Benchmarking)),
            ("198.20.0.0", None),
            ("198.51.99.255", None),
            ("198.51.100.0", Some(Documentation)),
            ("198.51.100.255", Some(Documentation)),
            ("198.51.101.0", None),
            ("203.0.112.255", None),
            ("203.0.113.0", Some(Documentation)),
            ("203.0.113.255", Some(Documentation)),
            ("203.0.114.0", None),
            ("223.255.255.255", None),
            ("224.0.0.0", Some(Multicast)),
            ("239.255.255.255", Some(Multicast)),
            ("240.0.0.0", Some(Reserved)),
            ("255.255.255.254", Some(Reserved)),
            ("255.255.255.255", Some(Broadcast)),
            ("8.8.8.8", None),
            ("93.184.215.14", None),
            // IPv6.
            ("::", Some(Unspecified)),
            ("::1", Some(Loopback)),
            ("::2", Some(ThisNetwork)),
            ("::ffff:127.0.0.1", Some(Loopback)),
            ("::ffff:10.1.2.3", Some(Private)),
            ("::ffff:169.254.169.254", Some(CloudMetadata)),
            ("::ffff:0.0.0.0", Some(Unspecified)),
            ("::ffff:8.8.8.8", None),
            ("::127.0.0.1", Some(Loopback)),
            ("::192.168.0.1", Some(Private)),
            ("::8.8.8.8", Some(Ipv4Compatible)),
            ("64:ff9b::127.0.0.1", Some(Loopback)),
            ("64:ff9b::169.254.169.254", Some(CloudMetadata)),
            ("64:ff9b::100.64.0.1", Some(SharedCgnat)),
            ("64:ff9b::8.8.8.8", None),
            ("64:ff9b:1::1", Some(Nat64Local)),
            ("64:ff9b:1:ffff:ffff:ffff:ffff:ffff", Some(Nat64Local)),
            ("100::", Some(Discard)),
            ("100::ffff:ffff:ffff:ffff", Some(Discard)),
            ("100:0:0:1::", Some(NotGlobalUnicast)),
            ("1fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(NotGlobalUnicast)),
            ("2000::", None),
            ("2001::", Some(Teredo)),
            ("2001:0:ffff:ffff:ffff:ffff:ffff:ffff", Some(Teredo)),
            ("2001:2::", Some(Benchmarking)),
            ("2001:2:0:ffff::", Some(Benchmarking)),
            ("2001:10::1", Some(ProtocolAssignments)),
            ("2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff", Some(ProtocolAssignments)),
            ("2001:200::", None),
            ("2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", None),
            ("2001:db8::", Some(Documentation)),
            ("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", Some(Documentation)),
            ("2001:db9::", None),
            ("2001:4860:4860::8888", None),
            ("2002::", Some(Relay6to4)),
            ("2002:7f00:1::", Some(Relay6to4)),
            ("2003::", None),
            ("3ffe:ffff::", None),
            ("3fff::", Some(Documentation)),
            ("3fff:fff:ffff::", Some(Documentation)),
            ("3fff:1000::", None),
            ("4000::", Some(NotGlobalUnicast)),
            ("fbff:ffff::", Some(NotGlobalUnicast)),
            ("fc00::", Some(UniqueLocal)),
            ("fd12:3456::1", Some(UniqueLocal)),
            ("fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(UniqueLocal)),
            ("fe00::", Some(NotGlobalUnicast)),
            ("fe80::", Some(LinkLocal)),
            ("fe80::1", Some(LinkLocal)),
            ("febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(LinkLocal)),
            ("fec0::", Some(SiteLocal)),
            ("feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(SiteLocal)),
            ("ff00::", Some(Multicast)),
            ("ff02::1", Some(Multicast)),
            ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(Multicast)),
        ];
        for (addr, want) in table {
            assert_eq!(classify(ip(addr)), *want, "{addr}");
            assert_eq!(range_cidr(ip(addr)).is_some(), want.is_some(), "{addr} cidr");
        }
        assert_eq!(range_cidr(ip("127.0.0.1")).as_deref(), Some("127.0.0.0/8"));
        assert_eq!(range_cidr(ip("::ffff:10.0.0.1")).as_deref(), Some("10.0.0.0/8"));
        assert_eq!(range_cidr(ip("fd00::1")).as_deref(), Some("fc00::/7"));
    }

    #[test]
    fn the_allow_list_takes_hosts_networks_and_addresses() {
        let allow =
            AllowList::parse(" Hooks.Lab.Internal. , 10.20.0.0/16,192.168.1.7, fd00::/8, [::1]").expect("parses");
        assert!(allow.allows_host("hooks.lab.internal"));
        assert!(allow.allows_host("HOOKS.lab.internal."));
        assert!(!allow.allows_host("lab.internal"));
        assert!(allow.allows_ip(ip("10.20.255.1")) && !allow.allows_ip(ip("10.21.0.1")));
        assert!(allow.allows_ip(ip("192.168.1.7")) && !allow.allows_ip(ip("192.168.1.8")));
        assert!(
            allow.allows_ip(ip("::ffff:192.168.1.7")),
            "mapped form of an allowed address"
        );
        assert!(allow.allows_ip(ip("fd00::5")) && allow.allows_ip(ip("::1")));
        assert!(AllowList::parse("").expect("empty").is_empty());
        assert!(AllowList::parse("10.0.0.0/33").is_err());
        assert!(AllowList::parse("http://x").is_err());
        assert!(AllowList::parse("a b").is_err());
    }

    #[test]
    fn checks_every_address_and_plain_http() {
        let none = AllowList::default();
        let public = ip("93.184.215.14");
        assert_eq!(check_address("h", public, &none, false), Ok(()));
        assert_eq!(
            check_address("h", public, &none, true),
            Err(Refusal::PlainHttp { host: "h".into() })
        );
        let refused = check_addresses("h", &[public, ip("127.0.0.1")], &none, false).expect_err("one loopback");
        let text = refused.to_string();
        assert!(
            text.contains("h:") && text.contains("loopback") && text.contains("127.0.0.0/8"),
            "{text}"
        );
        assert!(
            !text.contains("127.0.0.1"),
            "the resolved address is not echoed: {text}"
        );
        assert!(matches!(
            check_addresses("h", &[], &none, false),
            Err(Refusal::Unresolved { .. })
        ));
        let allow = AllowList::parse("127.0.0.0/8,lab.local").expect("parses");
        assert_eq!(check_address("h", ip("127.0.0.1"), &allow, true), Ok(()));
        assert!(check_address("h", ip("10.0.0.1"), &allow, true).is_err());
        assert_eq!(check_addresses("lab.local", &[ip("10.0.0.1")], &allow, true), Ok(()));
    }
}
