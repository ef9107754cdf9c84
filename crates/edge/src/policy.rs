//! The edge's request hygiene, written once and called by both transports (the lean path,
//! [`crate::fast`], and the full proxy, [`crate::proxy`]): which headers describe one hop,
//! which a `Connection` header may never remove, what a valid `Host` and a valid
//! `Content-Length` are, which peers are trusted proxies, and the forwarding headers the
//! edge writes afresh for every request.
//!
//! Everything here is a cheap function of bytes: the lean path calls it per request and
//! must not allocate for it.

use crate::proxy::Scheme;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Headers that describe one hop and are never forwarded (RFC 9110 §7.6.1).
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The forwarding headers the edge writes, in the order it writes them. Whatever a client
/// sent under these names is replaced (a trusted proxy's chain is extended instead).
pub const FORWARDING: [&str; 6] = [
    "x-forwarded-for",
    "x-real-ip",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "forwarded",
];

/// Headers a `Connection` token may never remove besides [`FORWARDING`]: without them the
/// instance cannot route the request, or either side loses the message's framing
/// (`Connection: close, Host` must not send a request upstream without its Host).
const FRAMING_AND_ROUTING: [&str; 3] = ["host", "content-length", "transfer-encoding"];

/// Whether `name` describes one hop only ([`HOP_BY_HOP`]).
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    HOP_BY_HOP
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h.as_bytes()))
}

/// Whether `name` is one of the forwarding headers the edge writes itself ([`FORWARDING`]).
pub fn is_forwarding(name: &[u8]) -> bool {
    FORWARDING
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h.as_bytes()))
}

/// Whether a `Connection` header naming `name` may remove it: not for the headers the
/// message's routing and framing depend on, nor for the forwarding headers.
pub fn connection_may_remove(name: &[u8]) -> bool {
    !FRAMING_AND_ROUTING
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h.as_bytes()))
        && !is_forwarding(name)
}

/// Longest host name the edge takes (a DNS name is at most 253 bytes, plus a final dot).
const MAX_HOST_NAME: usize = 254;

/// Whether `value` is a valid `Host`: `name[:port]`, the name a DNS-style name (letters,
/// digits, `-`, `_`, `.`), an IPv4 address or a bracketed IPv6 address, the port 1 to 5
/// ASCII digits up to 65535. Anything else (empty, user info, spaces, a signed or empty
/// port, …) is refused.
pub fn valid_host(value: &[u8]) -> bool {
    let (name, port) = if let Some(rest) = value.strip_prefix(b"[") {
        let Some(close) = rest.iter().position(|b| *b == b']') else {
            return false;
        };
        let inner = &rest[..close];
        let ok = std::str::from_utf8(inner).is_ok_and(|s| s.parse::<Ipv6Addr>().is_ok());
        if !ok {
            return false;
        }
        match &rest[close + 1..] {
            [] => return true,
            [b':', port @ ..] => (&value[..close + 2], Some(port)),
            _ => return false,
        }
    } else {
        match value.iter().rposition(|b| *b == b':') {
            Some(i) => (&value[..i], Some(&value[i + 1..])),
            None => (value, None),
        }
    };
    if let Some(port) = port {
        if !valid_port(port) {
            return false;
        }
    }
    if name.starts_with(b"[") {
        return true;
    }
    !name.is_empty()
        && name.len() <= MAX_HOST_NAME
        && name
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn valid_port(port: &[u8]) -> bool {
    (1..=5).contains(&port.len())
        && port.iter().all(u8::is_ascii_digit)
        && port.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0')) <= u32::from(u16::MAX)
}

/// A `Content-Length` value as the edge accepts it: 1 to 19 ASCII digits, nothing else (no
/// sign, padding, list or second value); `None` for anything else.
pub fn parse_content_length(value: &[u8]) -> Option<u64> {
    if !(1..=19).contains(&value.len()) {
        return None;
    }
    value.iter().try_fold(0u64, |n, b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}

/// Errors of this module.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A trusted-proxy range that is not a CIDR.
    #[error("{text:?} is not a CIDR ({reason}); give an address and a prefix length, e.g. 10.0.0.0/8, 192.0.2.7/32 or 2001:db8::/32")]
    InvalidCidr {
        /// What was given.
        text: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// An address range: an address and a prefix length (`10.0.0.0/8`, `2001:db8::/32`). An
/// IPv4-mapped IPv6 range (`::ffff:10.0.0.0/104`) is held as the IPv4 range it maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in the range (an IPv4-mapped IPv6 address counts as its IPv4 one).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask32(u32::from(ip), self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask128(u128::from(ip), self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

fn mask32(bits: u32, prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        bits & (u32::MAX << (32 - u32::from(prefix)))
    }
}

fn mask128(bits: u128, prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        bits & (u128::MAX << (128 - u32::from(prefix)))
    }
}

impl std::str::FromStr for Cidr {
    type Err = PolicyError;

    /// `ADDRESS/PREFIX`, or a bare address (the range of that one address). Host bits past
    /// the prefix are cleared.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = |reason| PolicyError::InvalidCidr {
            text: text.to_string(),
            reason,
        };
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad("not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => p
                .parse::<u8>()
                .map_err(|_| bad("the prefix length is too long"))?,
            Some(_) => return Err(bad("the prefix length is not a number")),
        };
        if prefix > max {
            return Err(bad("the prefix length is longer than the address"));
        }
        // An IPv4-mapped range is the IPv4 range it maps (peers are compared canonical).
        let (addr, prefix) = match addr {
            IpAddr::V6(v6) if prefix >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => (IpAddr::V4(v4), prefix - 96),
                None => (addr, prefix),
            },
            _ => (addr, prefix),
        };
        let network = match addr {
            IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(mask32(u32::from(v4), prefix))),
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(mask128(u128::from(v6), prefix))),
        };
        Ok(Cidr { network, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// The peers whose forwarding headers the edge keeps and extends (`--trusted-proxy`): a
/// load balancer or CDN in front of it. Empty by default: every client's forwarding
/// headers are replaced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    /// The proxies in `ranges`.
    pub fn new(ranges: Vec<Cidr>) -> Self {
        Self(ranges)
    }

    /// Whether `peer` is a trusted proxy (no work at all when none is configured).
    pub fn contains(&self, peer: IpAddr) -> bool {
        !self.0.is_empty() && self.0.iter().any(|c| c.contains(peer))
    }

    /// The configured ranges.
    pub fn ranges(&self) -> &[Cidr] {
        &self.0
    }
}

/// What the edge tells an instance about a request it forwards: the forwarding headers,
/// written afresh.
#[derive(Debug, Clone, Copy)]
pub struct Forwarding<'a> {
    /// The address the connection came from.
    pub peer: IpAddr,
    /// Whether `peer` is a trusted proxy: then the client's forwarding headers are kept
    /// (`X-Forwarded-For` and `Forwarded` extended with `peer`).
    pub trusted: bool,
    /// The request's (valid, see [`valid_host`]) Host.
    pub host: &'a [u8],
    /// How the request reached the edge.
    pub scheme: Scheme,
    /// The edge's port the request came in on.
    pub port: u16,
}

impl Forwarding<'_> {
    /// Appends the value of the forwarding header `FORWARDING[field]`; `prior` is the
    /// client's headers (name, value), consulted only for a trusted peer.
    pub fn value<'h, I>(&self, field: usize, prior: I, out: &mut Vec<u8>)
    where
        I: Iterator<Item = (&'h [u8], &'h [u8])>,
    {
        let Some(name) = FORWARDING.get(field) else {
            return;
        };
        let named = |prior: I| prior.filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()));
        let peer = self.peer.to_canonical();
        match field {
            // A chain: what the trusted proxy says, then the proxy itself.
            0 | 5 => {
                if self.trusted {
                    for (_, v) in named(prior) {
                        out.extend_from_slice(v);
                        out.extend_from_slice(b", ");
                    }
                }
                if field == 0 {
                    let _ = write!(out, "{peer}");
                } else {
                    out.extend_from_slice(b"for=");
                    match peer {
                        IpAddr::V4(ip) => {
                            let _ = write!(out, "{ip}");
                        }
                        IpAddr::V6(ip) => {
                            let _ = write!(out, "\"[{ip}]\"");
                        }
                    }
                    out.extend_from_slice(b";host=");
                    // A name with a port or an IPv6 address is not a token: quoted (a
                    // valid Host holds no quote or backslash).
                    let token = self
                        .host
                        .iter()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
                    if !token {
                        out.push(b'"');
                    }
                    out.extend_from_slice(self.host);
                    if !token {
                        out.push(b'"');
                    }
                    out.extend_from_slice(b";proto=");
                    out.extend_from_slice(self.proto());
                }
            }
            // One value: the trusted proxy's if it gave one, else the edge's.
            _ => {
                if self.trusted {
                    if let Some((_, v)) = named(prior).next() {
                        out.extend_from_slice(v);
                        return;
                    }
                }
                match field {
                    1 => {
                        let _ = write!(out, "{peer}");
                    }
                    2 => out.extend_from_slice(self.host),
                    3 => out.extend_from_slice(self.proto()),
                    _ => {
                        let _ = write!(out, "{}", self.port);
                    }
                }
            }
        }
    }

    /// Appends every forwarding header as a `name: value\r\n` line (the lean path's head).
    pub fn write_lines<'h, I>(&self, prior: I, out: &mut Vec<u8>)
    where
        I: Iterator<Item = (&'h [u8], &'h [u8])> + Clone,
    {
        for (field, name) in FORWARDING.iter().enumerate() {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            self.value(field, prior.clone(), out);
            out.extend_from_slice(b"\r\n");
        }
    }

    fn proto(&self) -> &'static [u8] {
        match self.scheme {
            Scheme::Http => b"http",
            Scheme::Https => b"https",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_names_or_addresses_with_a_numeric_port() {
        for ok in [
            "a.test",
            "Alpha.localhost:8080",
            "a.test.",
            "127.0.0.1",
            "127.0.0.1:80",
            "[::1]",
            "[2001:db8::1]:8443",
            "under_score-dash.example:65535",
            "x:1",
        ] {
            assert!(valid_host(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "",
            ":80",
            "a.test:",
            "a.test:abc",
            "a.test:+80",
            "a.test:-1",
            "a.test:65536",
            "a.test:123456",
            "a.test:80:80",
            "a test",
            "user@a.test",
            "a.test/x",
            "a\"b",
            "[::1",
            "[not-v6]",
            "[::1]x",
            "[::1]:",
            "[::1]:1x",
            "a.test\u{e9}",
        ] {
            assert!(!valid_host(bad.as_bytes()), "{bad:?}");
        }
        assert!(!valid_host(&b"a".repeat(300)));
        assert!(!valid_host(b"a.test\xff"));
    }

    #[test]
    fn content_lengths_are_plain_digits_only() {
        assert_eq!(parse_content_length(b"0"), Some(0));
        assert_eq!(parse_content_length(b"12345"), Some(12345));
        assert_eq!(parse_content_length(b"007"), Some(7));
        assert_eq!(
            parse_content_length(b"9999999999999999999"),
            Some(9_999_999_999_999_999_999)
        );
        for bad in [
            &b""[..],
            b"+5",
            b"-5",
            b" 5",
            b"5 ",
            b"5,5",
            b"5, 5",
            b"0x10",
            b"1e3",
            b"99999999999999999999",
            b"\xd9\xa5",
        ] {
            assert_eq!(parse_content_length(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn cidrs_contain_their_addresses_in_both_families() {
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(c.contains("10.1.200.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        // An IPv4 client on a dual-stack socket arrives IPv4-mapped.
        assert!(c.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!c.contains("2001:db8::1".parse().unwrap()));

        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:1::7".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
        assert!(!v6.contains("10.1.2.3".parse().unwrap()));

        let mapped: Cidr = "::ffff:192.0.2.0/120".parse().unwrap();
        assert_eq!(mapped.to_string(), "192.0.2.0/24");
        assert!(mapped.contains("192.0.2.9".parse().unwrap()));

        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert_eq!(one.to_string(), "127.0.0.1/32");
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.1".parse().unwrap()));
        let all6: Cidr = "::/0".parse().unwrap();
        assert!(all6.contains("2001:db8::1".parse().unwrap()));
        // Host bits past the prefix are cleared.
        assert_eq!(
            "10.1.2.3/8".parse::<Cidr>().unwrap().to_string(),
            "10.0.0.0/8"
        );

        for bad in [
            "",
            "10.0.0/8",
            "10.0.0.0/33",
            "10.0.0.0/",
            "10.0.0.0/x",
            "::/129",
            "host/8",
            "10.0.0.0/-1",
        ] {
            let e = bad.parse::<Cidr>().unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }

        let trusted = TrustedProxies::new(vec![c, v6]);
        assert!(trusted.contains("10.1.0.1".parse().unwrap()));
        assert!(!trusted.contains("192.0.2.1".parse().unwrap()));
        assert!(!TrustedProxies::default().contains("10.1.0.1".parse().unwrap()));
    }

    fn lines(f: &Forwarding<'_>, prior: &[(&str, &str)]) -> String {
        let mut out = Vec::new();
        f.write_lines(
            prior.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())),
            &mut out,
        );
        String::from_utf8(out).unwrap()
    }

    const CLIENT: [(&str, &str); 7] = [
        ("X-Forwarded-For", "1.1.1.1"),
        ("x-forwarded-for", "2.2.2.2"),
        ("X-Real-IP", "1.1.1.1"),
        ("X-Forwarded-Host", "evil.test"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Port", "443"),
        ("Forwarded", "for=1.1.1.1"),
    ];

    #[test]
    fn forwarding_headers_are_written_afresh_for_an_untrusted_peer() {
        let f = Forwarding {
            peer: "::ffff:203.0.113.5".parse().unwrap(),
            trusted: false,
            host: b"shop.test:8080",
            scheme: Scheme::Http,
            port: 8080,
        };
        assert_eq!(
            lines(&f, &CLIENT),
            "x-forwarded-for: 203.0.113.5\r\n\
             x-real-ip: 203.0.113.5\r\n\
             x-forwarded-host: shop.test:8080\r\n\
             x-forwarded-proto: http\r\n\
             x-forwarded-port: 8080\r\n\
             forwarded: for=203.0.113.5;host=\"shop.test:8080\";proto=http\r\n"
        );
        let v6 = Forwarding {
            peer: "2001:db8::5".parse().unwrap(),
            host: b"shop.test",
            scheme: Scheme::Https,
            port: 443,
            ..f
        };
        assert!(lines(&v6, &[])
            .ends_with("forwarded: for=\"[2001:db8::5]\";host=shop.test;proto=https\r\n"));
    }

    #[test]
    fn a_trusted_proxy_s_chain_is_kept_and_extended() {
        let f = Forwarding {
            peer: "10.0.0.2".parse().unwrap(),
            trusted: true,
            host: b"shop.test",
            scheme: Scheme::Http,
            port: 8080,
        };
        assert_eq!(
            lines(&f, &CLIENT),
            "x-forwarded-for: 1.1.1.1, 2.2.2.2, 10.0.0.2\r\n\
             x-real-ip: 1.1.1.1\r\n\
             x-forwarded-host: evil.test\r\n\
             x-forwarded-proto: https\r\n\
             x-forwarded-port: 443\r\n\
             forwarded: for=1.1.1.1, for=10.0.0.2;host=shop.test;proto=http\r\n"
        );
        // A trusted proxy that sent none: the edge's own.
        assert!(lines(&f, &[]).starts_with("x-forwarded-for: 10.0.0.2\r\nx-real-ip: 10.0.0.2\r\n"));
    }

    #[test]
    fn connection_tokens_cannot_remove_routing_framing_or_forwarding_headers() {
        for kept in [
            "Host",
            "content-length",
            "Transfer-Encoding",
            "X-Forwarded-For",
            "forwarded",
            "x-real-ip",
        ] {
            assert!(!connection_may_remove(kept.as_bytes()), "{kept}");
        }
        assert!(connection_may_remove(b"x-secret"));
        assert!(connection_may_remove(b"keep-alive"));
        assert!(is_hop_by_hop(b"Keep-Alive"));
        assert!(!is_hop_by_hop(b"host"));
    }
}
