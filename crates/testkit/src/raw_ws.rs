//! A WebSocket client written by hand, for frames no client library will send (unmasked,
//! reserved bits, broken UTF-8, fragmented control frames): an upgrade request, a frame
//! encoder and a frame reader with bounded waits.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::ws::WS_WAIT;

/// Frame opcodes (RFC 6455 §5.2).
pub mod opcode {
    /// A continuation fragment.
    pub const CONTINUATION: u8 = 0x0;
    /// A text frame.
    pub const TEXT: u8 = 0x1;
    /// A binary frame.
    pub const BINARY: u8 = 0x2;
    /// A close frame.
    pub const CLOSE: u8 = 0x8;
    /// A ping.
    pub const PING: u8 = 0x9;
    /// A pong.
    pub const PONG: u8 = 0xA;
}

/// The `Sec-WebSocket-Key` of every hand-written upgrade: RFC 6455's own sample nonce.
const SAMPLE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
/// Bytes read from the socket at once.
const READ_CHUNK_BYTES: usize = 8192;

/// Why a raw connection did not become a WebSocket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawConnectError {
    /// The server answered the upgrade with a status other than 101.
    Http {
        /// The status (0 when the status line did not parse).
        status: u16,
        /// What followed the head (possibly only its start).
        body: String,
    },
    /// The TCP connection or the upgrade response broke.
    Broken(String),
}

/// A GET upgrade request for `path` with `Host: host` and `Sec-WebSocket-Version: version`.
pub fn upgrade_request(host: &str, path: &str, version: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {SAMPLE_KEY}\r\nSec-WebSocket-Version: {version}\r\n\r\n"
    )
    .into_bytes()
}

/// One WebSocket frame; `mask` as a client must (RFC 6455 §5.3).
pub fn frame(fin: bool, rsv: u8, opcode: u8, payload: &[u8], mask: bool) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | (rsv << 4) | opcode];
    let m = if mask { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(m | n as u8),
        n if n <= 0xffff => {
            out.push(m | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(m | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if mask {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// A close frame's payload: code and reason bytes.
pub fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason);
    p
}

/// The code and reason of a close frame's payload (1005 when it carries none).
pub fn parse_close(payload: &[u8]) -> (u16, String) {
    if payload.len() < 2 {
        return (1005, String::new());
    }
    (u16::from_be_bytes([payload[0], payload[1]]), String::from_utf8_lossy(&payload[2..]).into_owned())
}

/// An upgraded connection that sends bytes as given and reads frames as they come.
pub struct RawWs {
    rd: tokio::net::tcp::OwnedReadHalf,
    /// Writes go through a task, so a large write never blocks reading the close frame.
    tx: tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
    buf: Vec<u8>,
}

impl RawWs {
    /// Connects to `addr` and upgrades `path` by hand (version 13).
    pub async fn connect(addr: SocketAddr, path: &str) -> Result<RawWs, RawConnectError> {
        let broken = |e: std::io::Error| RawConnectError::Broken(e.to_string());
        let stream = tokio::net::TcpStream::connect(addr).await.map_err(broken)?;
        let (mut rd, mut wr) = stream.into_split();
        wr.write_all(&upgrade_request(&addr.to_string(), path, "13")).await.map_err(broken)?;
        let mut buf = Vec::new();
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; READ_CHUNK_BYTES];
            match tokio::time::timeout(WS_WAIT, rd.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return Err(RawConnectError::Broken("upgrade response cut short".into())),
                Err(_) => return Err(RawConnectError::Broken("upgrade response timed out".into())),
                Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let status: u16 = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        if status != 101 {
            return Err(RawConnectError::Http { status, body: String::from_utf8_lossy(&buf[head_end..]).into_owned() });
        }
        buf.drain(..head_end);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
        tokio::spawn(async move {
            while let Some(bytes) = rx.recv().await {
                if wr.write_all(&bytes).await.is_err() {
                    break;
                }
            }
        });
        Ok(RawWs { rd, tx, buf })
    }

    /// Queues `bytes` for writing, exactly as given.
    pub fn send(&self, bytes: Vec<u8>) {
        let _ = self.tx.send(bytes);
    }

    /// The next frame from the server: opcode and payload. A hang, or an end without a
    /// close frame (1006), is an error.
    pub async fn frame(&mut self) -> Result<(u8, Vec<u8>), String> {
        self.fill(2).await?;
        let opcode = self.buf[0] & 0x0f;
        let (len, head) = match self.buf[1] & 0x7f {
            126 => {
                self.fill(4).await?;
                (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
            }
            127 => {
                self.fill(10).await?;
                (u64::from_be_bytes(self.buf[2..10].try_into().expect("8 bytes")) as usize, 10)
            }
            n => (n as usize, 2),
        };
        self.fill(head + len).await?;
        let payload = self.buf[head..head + len].to_vec();
        self.buf.drain(..head + len);
        Ok((opcode, payload))
    }

    async fn fill(&mut self, n: usize) -> Result<(), String> {
        while self.buf.len() < n {
            let mut chunk = [0u8; READ_CHUNK_BYTES];
            match tokio::time::timeout(WS_WAIT, self.rd.read(&mut chunk)).await {
                Err(_) => return Err(format!("nothing within {WS_WAIT:?} (hang)")),
                Ok(Ok(0)) => return Err("connection ended without a close frame (1006)".into()),
                Ok(Err(e)) => return Err(format!("connection error without a close frame (1006): {e}")),
                Ok(Ok(k)) => self.buf.extend_from_slice(&chunk[..k]),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_encode_their_length_in_the_three_sizes() {
        assert_eq!(frame(true, 0, opcode::TEXT, b"hi", false), [0x81, 2, b'h', b'i']);
        let mid = frame(true, 0, opcode::BINARY, &[0; 126], false);
        assert_eq!(&mid[..4], &[0x82, 126, 0, 126]);
        let big = frame(false, 0, opcode::BINARY, &[0; 65_536], true);
        assert_eq!(&big[..10], &[0x02, 0x80 | 127, 0, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!(big.len(), 10 + 4 + 65_536, "header, mask key, payload");
    }

    #[test]
    fn masking_is_reversible_with_the_key() {
        let f = frame(true, 0b100, opcode::TEXT, b"abcde", true);
        assert_eq!(f[0], 0x80 | 0x40 | 0x1, "FIN, RSV1, text");
        let key = &f[2..6];
        let unmasked: Vec<u8> = f[6..].iter().enumerate().map(|(i, b)| b ^ key[i % 4]).collect();
        assert_eq!(unmasked, b"abcde");
    }

    #[test]
    fn close_payloads_round_trip() {
        assert_eq!(parse_close(&close_payload(1008, b"auth failed")), (1008, "auth failed".to_owned()));
        assert_eq!(parse_close(&[3]), (1005, String::new()));
    }
}
