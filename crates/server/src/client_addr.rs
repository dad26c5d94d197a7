//! The client's real address behind trusted proxies: from `Forwarded` /
//! `X-Forwarded-For` (the rightmost hop that is not itself a trusted proxy) when the
//! TCP peer is one of `--trusted-proxies`, never otherwise, so a client cannot forge
//! its way past the per-IP cap by setting a header.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// Why a `--trusted-proxies` entry is not a CIDR block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// The address part is not an IPv4 or IPv6 address.
    #[error("`{0}` is not an IP address or CIDR block (e.g. 10.0.0.0/8, ::1/128)")]
    Address(String),
    /// The prefix length is not a number within the address's bits.
    #[error("`{0}`: prefix length must be 0-32 (IPv4) or 0-128 (IPv6)")]
    Prefix(String),
}

/// One block of addresses, e.g. `10.0.0.0/8`; a bare address is its own /32 or /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, CidrError> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let net = canonical(addr.parse::<IpAddr>().map_err(|_| CidrError::Address(s.to_owned()))?);
        let bits = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= bits).ok_or_else(|| CidrError::Prefix(s.to_owned()))?,
        };
        Ok(Cidr { net, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

impl Cidr {
    /// Whether `ip` lies in this block (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => masked(u32::from(net).into(), self.prefix, 32) == masked(u32::from(ip).into(), self.prefix, 32),
            (IpAddr::V6(net), IpAddr::V6(ip)) => masked(u128::from(net), self.prefix, 128) == masked(u128::from(ip), self.prefix, 128),
            _ => false,
        }
    }
}

fn masked(bits: u128, prefix: u8, width: u8) -> u128 {
    if prefix == 0 {
        return 0;
    }
    let keep = u32::from(width - prefix);
    (bits >> keep) << keep
}

/// `::ffff:a.b.c.d` as `a.b.c.d`: a dual-stack listener reports IPv4 peers that way.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The peers whose forwarding headers (and PROXY protocol header) are believed.
#[derive(Debug, Clone, Default)]
pub(crate) struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    pub(crate) fn new(blocks: Vec<Cidr>) -> Self {
        TrustedProxies(blocks)
    }

    /// Whether `ip` is a trusted proxy.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    /// The blocks, comma-separated, for the startup line ("" when none).
    pub(crate) fn describe(&self) -> String {
        self.0.iter().map(Cidr::to_string).collect::<Vec<_>>().join(",")
    }

    /// The client behind `peer` for one request: `peer` itself unless it is trusted;
    /// then the rightmost forwarded hop that is not trusted (`Forwarded` if present, else
    /// `X-Forwarded-For`). A hop that cannot be read (`unknown`, an obfuscated name,
    /// garbage) ends the walk at the nearest trusted hop: nothing left of it can be believed.
    pub(crate) fn client(&self, headers: &http::HeaderMap, peer: SocketAddr) -> SocketAddr {
        if !self.contains(peer.ip()) {
            return peer;
        }
        let hops = forwarded_hops(headers);
        let mut nearest = peer;
        for hop in hops.iter().rev() {
            match parse_hop(hop) {
                Some(addr) if self.contains(addr.ip()) => nearest = addr,
                Some(addr) => return addr,
                None => return nearest,
            }
        }
        nearest
    }
}

/// The `for=` hops of every `Forwarded` header, or else every `X-Forwarded-For`
/// entry, leftmost (farthest) first.
fn forwarded_hops(headers: &http::HeaderMap) -> Vec<String> {
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().map(str::to_owned).unwrap_or_else(|_| "unknown".into()))
            .flat_map(|v| v.split(',').map(|e| e.trim().to_owned()).collect::<Vec<_>>())
            .filter(|e| !e.is_empty())
            .collect()
    };
    let forwarded: Vec<String> = values("forwarded")
        .into_iter()
        .map(|element| {
            element
                .split(';')
                .filter_map(|pair| pair.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("for"))
                .map_or_else(|| "unknown".to_owned(), |(_, v)| v.trim().to_owned())
        })
        .collect();
    if !forwarded.is_empty() {
        return forwarded;
    }
    values("x-forwarded-for")
}

/// One hop: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`, `[2001:db8::1]:4711`, any of
/// them in double quotes (RFC 7239). Port 0 when the hop names none.
fn parse_hop(hop: &str) -> Option<SocketAddr> {
    let hop = hop.trim().trim_matches('"');
    if let Some(rest) = hop.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        let ip: Ipv6Addr = ip.parse().ok()?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => 0,
            None => return None,
        };
        return Some(SocketAddr::new(canonical(IpAddr::V6(ip)), port));
    }
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(SocketAddr::new(canonical(ip), 0));
    }
    let (ip, port) = hop.split_once(':')?;
    Some(SocketAddr::new(IpAddr::V4(ip.parse::<Ipv4Addr>().ok()?), port.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(blocks: &[&str]) -> TrustedProxies {
        TrustedProxies::new(blocks.iter().map(|b| b.parse().unwrap()).collect())
    }

    fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    fn peer(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidrs_parse_and_match() {
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(c.contains("10.1.255.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.0.9".parse().unwrap()), "IPv4-mapped IPv6 is IPv4");
        let host: Cidr = "127.0.0.1".parse().unwrap();
        assert_eq!(host.to_string(), "127.0.0.1/32");
        assert!(!host.contains("127.0.0.2".parse().unwrap()));
        let any: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(any.contains("203.0.113.9".parse().unwrap()));
        assert!(!any.contains("::1".parse().unwrap()), "an IPv4 block never holds IPv6");
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:1::5".parse().unwrap()));
        assert!(!v6.contains("2001:db9::5".parse().unwrap()));
        assert_eq!("10.0.0.0/33".parse::<Cidr>(), Err(CidrError::Prefix("10.0.0.0/33".into())));
        assert!(matches!("example.com".parse::<Cidr>(), Err(CidrError::Address(_))));
        assert!(matches!("10.0.0.0/x".parse::<Cidr>(), Err(CidrError::Prefix(_))));
    }

    #[test]
    fn headers_from_an_untrusted_peer_are_ignored() {
        let t = trusted(&["10.0.0.0/8"]);
        let h = headers(&[("x-forwarded-for", "1.2.3.4"), ("forwarded", "for=5.6.7.8")]);
        assert_eq!(t.client(&h, peer("203.0.113.7:5000")), peer("203.0.113.7:5000"));
        assert_eq!(TrustedProxies::default().client(&h, peer("127.0.0.1:1")), peer("127.0.0.1:1"));
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let t = trusted(&["10.0.0.0/8"]);
        // A client forged the first entry; the load balancer (10.0.0.2) appended the real one.
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.4, 10.0.0.2")]);
        assert_eq!(t.client(&h, peer("10.0.0.1:80")).ip(), "198.51.100.4".parse::<IpAddr>().unwrap());
        // Split over two header lines, the order is kept.
        let h = headers(&[("x-forwarded-for", "6.6.6.6"), ("x-forwarded-for", "198.51.100.5")]);
        assert_eq!(t.client(&h, peer("10.0.0.1:80")).ip(), "198.51.100.5".parse::<IpAddr>().unwrap());
        // Only trusted hops: the farthest of them.
        let h = headers(&[("x-forwarded-for", "10.9.9.9, 10.0.0.2")]);
        assert_eq!(t.client(&h, peer("10.0.0.1:80")).ip(), "10.9.9.9".parse::<IpAddr>().unwrap());
        // No header: the proxy itself.
        assert_eq!(t.client(&http::HeaderMap::new(), peer("10.0.0.1:80")), peer("10.0.0.1:80"));
    }

    #[test]
    fn forwarded_wins_and_its_forms_parse() {
        let t = trusted(&["10.0.0.0/8"]);
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("forwarded", r#"for=192.0.2.60;proto=http;by=203.0.113.43, for="[2001:db8:cafe::17]:4711""#),
        ]);
        assert_eq!(t.client(&h, peer("10.0.0.1:80")), peer("[2001:db8:cafe::17]:4711"));
        let h = headers(&[("forwarded", r#"For="192.0.2.43:47011""#)]);
        assert_eq!(t.client(&h, peer("10.0.0.1:80")), peer("192.0.2.43:47011"));
    }

    #[test]
    fn an_unreadable_hop_stops_at_the_nearest_trusted_one() {
        let t = trusted(&["10.0.0.0/8"]);
        let h = headers(&[("x-forwarded-for", "198.51.100.4, unknown, 10.0.0.3")]);
        assert_eq!(t.client(&h, peer("10.0.0.1:80")).ip(), "10.0.0.3".parse::<IpAddr>().unwrap());
        let h = headers(&[("forwarded", "for=_hidden")]);
        assert_eq!(t.client(&h, peer("10.0.0.1:80")), peer("10.0.0.1:80"));
        for bad in ["[::1", "[::1]x", "1.2.3.4:port", "", "1.2.3.4:5:6"] {
            assert_eq!(parse_hop(bad), None, "{bad:?}");
        }
    }
}
