//! The PROXY protocol (HAProxy's, v1 text and v2 binary) a TCP load balancer puts in
//! front of the connection to say who the client is. Read only from trusted proxies,
//! and only when the first bytes are its signature: an HTTP request never starts with
//! `PROXY ` or the v2 signature, so a trusted proxy may send it or not.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// The longest v1 header, CRLF included (the specification's bound).
pub const V1_MAX_BYTES: usize = 107;

const V1_PREFIX: &[u8] = b"PROXY ";
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// Signature, version/command, family, length.
const V2_FIXED_BYTES: usize = 16;

/// Why a PROXY header was refused (the connection is closed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyHeaderError {
    /// A v1 header with no CRLF within [`V1_MAX_BYTES`].
    #[error("PROXY v1 header longer than 107 bytes")]
    TooLong,
    /// A v1 header that does not follow the grammar.
    #[error("malformed PROXY v1 header: {0}")]
    V1(&'static str),
    /// A v2 header that does not follow the format.
    #[error("malformed PROXY v2 header: {0}")]
    V2(&'static str),
}

/// What the first bytes of a connection are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Not a PROXY header: the bytes are the application's.
    NotProxy,
    /// A prefix of a PROXY header: read more.
    Incomplete,
    /// A whole header of `len` bytes; `source` is the client (None: `UNKNOWN`/`LOCAL`,
    /// or a family other than TCP over IPv4/IPv6 — the TCP peer stands).
    Header { len: usize, source: Option<SocketAddr> },
}

/// Reads a PROXY header at the start of `buf`, if there is one.
pub fn parse(buf: &[u8]) -> Result<Parsed, ProxyHeaderError> {
    if buf.is_empty() {
        return Ok(Parsed::Incomplete);
    }
    let n = buf.len().min(V1_PREFIX.len());
    if buf[..n] == V1_PREFIX[..n] {
        return if buf.len() < V1_PREFIX.len() { Ok(Parsed::Incomplete) } else { parse_v1(buf) };
    }
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] == V2_SIGNATURE[..n] {
        return if buf.len() < V2_FIXED_BYTES { Ok(Parsed::Incomplete) } else { parse_v2(buf) };
    }
    Ok(Parsed::NotProxy)
}

fn parse_v1(buf: &[u8]) -> Result<Parsed, ProxyHeaderError> {
    let window = &buf[..buf.len().min(V1_MAX_BYTES)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX_BYTES { Err(ProxyHeaderError::TooLong) } else { Ok(Parsed::Incomplete) };
    };
    let line = std::str::from_utf8(&buf[..end]).map_err(|_| ProxyHeaderError::V1("not ASCII"))?;
    let fields: Vec<&str> = line.split(' ').collect();
    let len = end + 2;
    match fields.get(1).copied() {
        Some("UNKNOWN") => Ok(Parsed::Header { len, source: None }),
        Some(proto @ ("TCP4" | "TCP6")) => {
            let [_, _, src, dst, sport, dport] = fields[..] else {
                return Err(ProxyHeaderError::V1("expected PROXY TCP4|TCP6 <src> <dst> <sport> <dport>"));
            };
            // The destination is this listener; checked for the grammar, not used.
            let src: IpAddr = match proto {
                "TCP4" => {
                    dst.parse::<Ipv4Addr>().map_err(|_| ProxyHeaderError::V1("bad IPv4 destination"))?;
                    src.parse::<Ipv4Addr>().map_err(|_| ProxyHeaderError::V1("bad IPv4 source"))?.into()
                }
                _ => {
                    dst.parse::<Ipv6Addr>().map_err(|_| ProxyHeaderError::V1("bad IPv6 destination"))?;
                    src.parse::<Ipv6Addr>().map_err(|_| ProxyHeaderError::V1("bad IPv6 source"))?.into()
                }
            };
            let port = |p: &str| {
                // The grammar has no leading zeros or signs, which `parse` would allow.
                if p.is_empty() || (p.len() > 1 && p.starts_with('0')) || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(ProxyHeaderError::V1("bad port"));
                }
                p.parse::<u16>().map_err(|_| ProxyHeaderError::V1("bad port"))
            };
            let sport = port(sport)?;
            port(dport)?;
            Ok(Parsed::Header { len, source: Some(SocketAddr::new(src, sport)) })
        }
        _ => Err(ProxyHeaderError::V1("protocol must be TCP4, TCP6 or UNKNOWN")),
    }
}

fn parse_v2(buf: &[u8]) -> Result<Parsed, ProxyHeaderError> {
    let version_command = buf[12];
    if version_command >> 4 != 2 {
        return Err(ProxyHeaderError::V2("version must be 2"));
    }
    let command = version_command & 0x0f;
    if command > 1 {
        return Err(ProxyHeaderError::V2("command must be LOCAL or PROXY"));
    }
    let family = buf[13];
    let body_len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let len = V2_FIXED_BYTES + body_len;
    if buf.len() < len {
        return Ok(Parsed::Incomplete);
    }
    let body = &buf[V2_FIXED_BYTES..len];
    // LOCAL: the proxy's own connection (a health check); the peer stands.
    if command == 0 {
        return Ok(Parsed::Header { len, source: None });
    }
    let source = match family {
        // TCP over IPv4: src 4, dst 4, src port 2, dst port 2.
        0x11 => {
            if body.len() < 12 {
                return Err(ProxyHeaderError::V2("IPv4 address block shorter than 12 bytes"));
            }
            let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            Some(SocketAddr::new(ip.into(), u16::from_be_bytes([body[8], body[9]])))
        }
        // TCP over IPv6: src 16, dst 16, src port 2, dst port 2.
        0x21 => {
            if body.len() < 36 {
                return Err(ProxyHeaderError::V2("IPv6 address block shorter than 36 bytes"));
            }
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&body[..16]);
            Some(SocketAddr::new(Ipv6Addr::from(octets).into(), u16::from_be_bytes([body[32], body[33]])))
        }
        // UNSPEC, UDP, UNIX sockets: nothing an IP cap can use.
        _ => None,
    };
    Ok(Parsed::Header { len, source })
}

/// Reads a PROXY header off the start of `stream` if there is one; returns the client
/// it names and the bytes read past it (the application's, to be replayed).
pub(crate) async fn read_header<S: AsyncRead + Unpin>(stream: &mut S) -> std::io::Result<(Option<SocketAddr>, Vec<u8>)> {
    let mut buf = Vec::with_capacity(V1_MAX_BYTES);
    let mut chunk = [0u8; 512];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok((None, buf));
        }
        buf.extend_from_slice(&chunk[..n]);
        match parse(&buf).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))? {
            Parsed::NotProxy => return Ok((None, buf)),
            Parsed::Incomplete => {}
            Parsed::Header { len, source } => return Ok((source, buf.split_off(len))),
        }
    }
}

/// A stream with some bytes already read off it put back in front.
pub(crate) struct Prefixed<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    pub(crate) fn new(prefix: Vec<u8>, inner: S) -> Self {
        Prefixed { prefix, pos: 0, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = (self.prefix.len() - self.pos).min(buf.remaining());
            let start = self.pos;
            buf.put_slice(&self.prefix[start..start + n]);
            self.pos += n;
            if self.pos == self.prefix.len() {
                self.prefix = Vec::new();
                self.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut b = V2_SIGNATURE.to_vec();
        b.push(0x20 | command);
        b.push(family);
        b.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
        b.extend_from_slice(body);
        b
    }

    #[test]
    fn v1_tcp4_tcp6_and_unknown() {
        let h = b"PROXY TCP4 198.51.100.22 203.0.113.7 35646 80\r\nGET / HTTP/1.1\r\n";
        assert_eq!(parse(h), Ok(Parsed::Header { len: 47, source: Some("198.51.100.22:35646".parse().unwrap()) }));
        let h = b"PROXY TCP6 2001:db8::1 2001:db8::2 4711 443\r\n";
        assert_eq!(parse(h), Ok(Parsed::Header { len: h.len(), source: Some("[2001:db8::1]:4711".parse().unwrap()) }));
        let h = b"PROXY UNKNOWN\r\n";
        assert_eq!(parse(h), Ok(Parsed::Header { len: h.len(), source: None }));
    }

    #[test]
    fn v1_prefixes_are_incomplete_and_http_is_not_proxy() {
        for cut in [1, 3, 6, 20] {
            assert_eq!(parse(&b"PROXY TCP4 198.51.100.22 203.0.113.7 35646 80\r\n"[..cut]), Ok(Parsed::Incomplete), "{cut}");
        }
        assert_eq!(parse(b""), Ok(Parsed::Incomplete));
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Ok(Parsed::NotProxy));
        assert_eq!(parse(b"P"), Ok(Parsed::Incomplete));
        assert_eq!(parse(b"POST /api"), Ok(Parsed::NotProxy));
        assert_eq!(parse(b"\x16\x03\x01"), Ok(Parsed::NotProxy), "a TLS ClientHello is not PROXY");
    }

    #[test]
    fn v1_refusals() {
        assert_eq!(parse(&[b"PROXY TCP4 ".as_slice(), &[b'1'; 120]].concat()), Err(ProxyHeaderError::TooLong));
        for bad in [
            "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
            "PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
            "PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
            "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
            "PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
            "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
            "PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
            "PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn v2_inet_inet6_local_and_tlvs() {
        let mut body = vec![198, 51, 100, 22, 203, 0, 113, 7];
        body.extend_from_slice(&35646u16.to_be_bytes());
        body.extend_from_slice(&443u16.to_be_bytes());
        body.extend_from_slice(&[0x04, 0x00, 0x01, 0xff]); // a TLV after the addresses
        let h = v2(1, 0x11, &body);
        assert_eq!(parse(&h), Ok(Parsed::Header { len: h.len(), source: Some("198.51.100.22:35646".parse().unwrap()) }));
        for cut in [1, 12, 15, 16, h.len() - 1] {
            assert_eq!(parse(&h[..cut]), Ok(Parsed::Incomplete), "{cut}");
        }

        let mut body = Vec::new();
        let src: Ipv6Addr = "2001:db8::7".parse().unwrap();
        body.extend_from_slice(&src.octets());
        body.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        body.extend_from_slice(&[0x12, 0x67, 0, 80]);
        let h = v2(1, 0x21, &body);
        assert_eq!(parse(&h), Ok(Parsed::Header { len: h.len(), source: Some("[2001:db8::7]:4711".parse().unwrap()) }));

        let h = v2(0, 0x00, &[]);
        assert_eq!(parse(&h), Ok(Parsed::Header { len: 16, source: None }), "LOCAL keeps the peer");
        let h = v2(1, 0x31, &[0u8; 216]);
        assert_eq!(parse(&h), Ok(Parsed::Header { len: h.len(), source: None }), "a UNIX socket keeps the peer");
    }

    #[test]
    fn v2_refusals() {
        let mut h = v2(1, 0x11, &[0u8; 12]);
        h[12] = 0x11;
        assert_eq!(parse(&h), Err(ProxyHeaderError::V2("version must be 2")));
        let h = v2(2, 0x11, &[0u8; 12]);
        assert!(parse(&h).is_err(), "unknown command");
        let h = v2(1, 0x11, &[0u8; 11]);
        assert!(parse(&h).is_err(), "short IPv4 block");
        let h = v2(1, 0x21, &[0u8; 35]);
        assert!(parse(&h).is_err(), "short IPv6 block");
    }

    /// Not a fuzzer (fuzz/ would link the whole server), but the same promise on a few
    /// hundred thousand inputs: no panic, a header never longer than its input, and every
    /// proper prefix of a whole header is `Incomplete`, never an error or another header.
    #[test]
    fn arbitrary_bytes_never_panic_and_prefixes_of_headers_are_incomplete() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let seeds: [&[u8]; 3] = [b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", b"PROXY TCP6 ::1 ::2 3 4\r\n", &V2_SIGNATURE[..]];
        for round in 0..200_000u32 {
            let mut buf: Vec<u8> = seeds[round as usize % seeds.len()].to_vec();
            // Mutate a few bytes, truncate or extend: inputs near the grammar, where bugs live.
            for _ in 0..(next() % 4) {
                let at = (next() as usize) % (buf.len() + 1);
                match next() % 3 {
                    0 if at < buf.len() => buf[at] = next() as u8,
                    1 => buf.insert(at.min(buf.len()), next() as u8),
                    _ => buf.truncate(at.max(1)),
                }
            }
            if round % 7 == 0 {
                buf.extend((0..(next() % 64)).map(|_| next() as u8));
            }
            if let Ok(Parsed::Header { len, .. }) = parse(&buf) {
                assert!(len <= buf.len(), "{buf:?}");
                for cut in 0..len {
                    assert_eq!(parse(&buf[..cut]), Ok(Parsed::Incomplete), "prefix {cut} of {buf:?}");
                }
            }
        }
    }

    #[tokio::test]
    async fn a_header_is_read_off_and_what_follows_is_replayed() {
        let (mut client, server) = tokio::io::duplex(1024);
        tokio::io::AsyncWriteExt::write_all(&mut client, b"PROXY TCP4 10.1.2.3 10.0.0.1 5555 80\r\nGET / HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        drop(client);
        let mut server = server;
        let (source, rest) = read_header(&mut server).await.unwrap();
        assert_eq!(source, Some("10.1.2.3:5555".parse().unwrap()));
        let mut replayed = Prefixed::new(rest, server);
        let mut all = String::new();
        replayed.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "GET / HTTP/1.1\r\n\r\n");
    }
}
