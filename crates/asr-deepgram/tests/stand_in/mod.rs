//! `DeepgramStandIn`: a local STAND-IN for Deepgram's live `/v1/listen` endpoint (the real
//! service is not reachable from the tests). It speaks Deepgram's wire protocol on
//! 127.0.0.1:0: checks `Authorization: Token <key>` (401 otherwise), records the query and
//! every frame it receives, and answers with `Results`, `SpeechStarted`, `UtteranceEnd`
//! and `Metadata` shaped as Deepgram's API reference documents them.
//!
//! What it "hears" is a test code, not speech: audio is made of [`BLOCK_BYTES`] blocks
//! whose samples all hold one value; value `n > 0` is the word `w<n>`, 0 is silence. Each
//! completed block gets a final `Results` (empty transcript for silence), each half block
//! an interim one, with times in seconds from the socket's first audio byte, exactly as
//! Deepgram counts them. Per-connection plans add scripted messages and drops.

// Helpers unused by some tests; the handshake callback's error type is tungstenite's.
#![allow(dead_code, unreachable_pub, clippy::result_large_err)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

/// Samples in one coded word block: 200 ms at 16 kHz.
pub const BLOCK_SAMPLES: usize = 3_200;
/// Bytes in one coded word block.
pub const BLOCK_BYTES: usize = BLOCK_SAMPLES * 2;
/// Seconds in one coded word block.
pub const BLOCK_SECS: f64 = 0.2;

/// PCM for a sequence of coded words (0 = a silent block).
pub fn coded_audio(words: &[i16]) -> Vec<u8> {
    words
        .iter()
        .flat_map(|&w| std::iter::repeat_n(w.to_le_bytes(), BLOCK_SAMPLES).flatten())
        .collect()
}

/// One frame the stand-in received.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Binary(Vec<u8>),
    Text(String),
    Close(Option<u16>),
}

/// What the stand-in saw of one connection attempt.
#[derive(Debug, Clone, Default)]
pub struct Connection {
    pub path: String,
    pub query: Vec<(String, String)>,
    pub authorization: Option<String>,
    /// `false` when the handshake was refused.
    pub accepted: bool,
    pub frames: Vec<Frame>,
}

impl Connection {
    /// Every audio byte received, in order.
    pub fn audio(&self) -> Vec<u8> {
        self.frames
            .iter()
            .filter_map(|f| match f {
                Frame::Binary(b) => Some(b.as_slice()),
                _ => None,
            })
            .flatten()
            .copied()
            .collect()
    }

    /// The `type` of every text frame, in order.
    pub fn text_types(&self) -> Vec<String> {
        self.frames
            .iter()
            .filter_map(|f| match f {
                Frame::Text(t) => serde_json::from_str::<serde_json::Value>(t)
                    .ok()
                    .and_then(|v| v["type"].as_str().map(str::to_owned)),
                _ => None,
            })
            .collect()
    }

    /// The first value of a query parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// How the stand-in treats one accepted connection.
#[derive(Debug, Clone, Default)]
pub struct ConnectionPlan {
    /// Answer the coded audio with results (see the module doc).
    pub recognize: bool,
    /// Messages sent once this many audio bytes arrived on the connection.
    pub scripted: Vec<(usize, String)>,
    /// After this many audio bytes: answer the completed blocks, then drop the TCP
    /// connection without a close frame.
    pub drop_after_bytes: Option<usize>,
    /// After this many audio bytes: answer the completed blocks, then close with this code
    /// and reason (Deepgram's 1011 `NET-0001`).
    pub close_after_bytes: Option<(usize, u16, String)>,
}

/// The stand-in's script.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// The key a client must send as `Authorization: Token <key>`.
    pub key: String,
    /// Plans by connection number; connections past the list use `default`.
    pub connections: Vec<ConnectionPlan>,
    pub default: ConnectionPlan,
    /// Handshakes from this connection number on are refused with this status.
    pub refuse_from: Option<(usize, u16)>,
}

/// A running stand-in: its address and what it recorded.
pub struct DeepgramStandIn {
    pub addr: SocketAddr,
    connections: Arc<Mutex<Vec<Connection>>>,
    runtime: tokio::runtime::Runtime,
}

impl DeepgramStandIn {
    /// Starts a stand-in on 127.0.0.1:0 following `plan`.
    pub fn start(plan: Plan) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("stand-in runtime");
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(Mutex::new(Vec::new()));
        let plan = Arc::new(plan);
        let recorded = connections.clone();
        runtime.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let index = {
                    let mut all = recorded.lock().unwrap();
                    all.push(Connection::default());
                    all.len() - 1
                };
                tokio::spawn(serve(tcp, index, plan.clone(), recorded.clone()));
            }
        });
        DeepgramStandIn {
            addr,
            connections,
            runtime,
        }
    }

    /// The base URL a client is configured with.
    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Every connection attempt so far.
    pub fn connections(&self) -> Vec<Connection> {
        self.connections.lock().unwrap().clone()
    }
}

async fn serve(
    tcp: tokio::net::TcpStream,
    index: usize,
    plan: Arc<Plan>,
    recorded: Arc<Mutex<Vec<Connection>>>,
) {
    let refused = plan
        .refuse_from
        .filter(|(from, _)| index >= *from)
        .map(|(_, status)| status);
    let record = recorded.clone();
    let key = plan.key.clone();
    let callback = move |request: &Request, response: Response| {
        let mut all = record.lock().unwrap();
        let conn = &mut all[index];
        conn.path = request.uri().path().to_owned();
        conn.query = url_pairs(request.uri().query().unwrap_or(""));
        conn.authorization = request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let status = if conn.authorization.as_deref() != Some(&format!("Token {key}")) {
            Some(401)
        } else {
            refused
        };
        if let Some(status) = status {
            let mut refusal = ErrorResponse::new(Some(format!("{{\"err_code\":\"{status}\"}}")));
            *refusal.status_mut() = StatusCode::from_u16(status).unwrap();
            return Err(refusal);
        }
        conn.accepted = true;
        Ok(response)
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await else {
        return;
    };
    let conn_plan = plan
        .connections
        .get(index)
        .cloned()
        .unwrap_or_else(|| plan.default.clone());
    let (mut sink, mut stream) = ws.split();
    let push = |frame: Frame| recorded.lock().unwrap()[index].frames.push(frame);
    let mut audio: Vec<u8> = Vec::new();
    let mut finalised_bytes = 0usize; // audio answered with a final so far
    let mut interim_sent_for: Option<usize> = None;
    let mut scripted = conn_plan.scripted.clone();
    let mut speaking = false;
    while let Some(Ok(message)) = stream.next().await {
        match message {
            Message::Binary(bytes) => {
                push(Frame::Binary(bytes.to_vec()));
                audio.extend_from_slice(&bytes);
                let cut = conn_plan
                    .drop_after_bytes
                    .or(conn_plan.close_after_bytes.as_ref().map(|c| c.0))
                    .filter(|n| audio.len() >= *n);
                let heard = cut.unwrap_or(audio.len()).min(audio.len());
                let mut out = Vec::new();
                if conn_plan.recognize {
                    recognize(
                        &audio[..heard],
                        &mut finalised_bytes,
                        &mut interim_sent_for,
                        &mut speaking,
                        &mut out,
                    );
                }
                scripted.retain(|(after, text)| {
                    if audio.len() >= *after {
                        out.push(text.clone());
                        false
                    } else {
                        true
                    }
                });
                for text in out {
                    if sink.send(Message::text(text)).await.is_err() {
                        return;
                    }
                }
                if cut.is_some() {
                    // Let the client read the finals before the socket goes.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    if let Some((_, code, reason)) = &conn_plan.close_after_bytes {
                        let _ = sink
                            .send(Message::Close(Some(CloseFrame {
                                code: CloseCode::from(*code),
                                reason: reason.as_str().into(),
                            })))
                            .await;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    return; // dropping both halves closes the TCP connection
                }
            }
            Message::Text(text) => {
                push(Frame::Text(text.to_string()));
                let kind = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| v["type"].as_str().map(str::to_owned));
                match kind.as_deref() {
                    // Finalize: the open part of a block becomes a final of its own.
                    Some("Finalize") if audio.len() > finalised_bytes && conn_plan.recognize => {
                        let start = finalised_bytes;
                        let value = sample_at(&audio, start);
                        let dur = (audio.len() - start) as f64 / 32_000.0;
                        let result = results(value, start as f64 / 32_000.0, dur, true, true, true);
                        finalised_bytes = audio.len();
                        let _ = sink.send(Message::text(result)).await;
                    }
                    Some("CloseStream") => {
                        let metadata = json!({
                            "type": "Metadata", "transaction_key": "deprecated",
                            "request_id": format!("stand-in-{index}"), "sha256": "0",
                            "created": "2025-01-01T00:00:00.000Z",
                            "duration": audio.len() as f64 / 32_000.0, "channels": 1,
                            "models": ["stand-in"], "model_info": {}
                        });
                        let _ = sink.send(Message::text(metadata.to_string())).await;
                        let _ = sink
                            .send(Message::Close(Some(CloseFrame {
                                code: CloseCode::Normal,
                                reason: "".into(),
                            })))
                            .await;
                    }
                    _ => {}
                }
            }
            Message::Close(frame) => {
                push(Frame::Close(frame.map(|f| u16::from(f.code))));
                break;
            }
            _ => {}
        }
    }
}

/// Answers the coded audio heard so far: a final per completed block, an interim per
/// half block, `SpeechStarted` at the first word after silence, `UtteranceEnd` at the
/// first silence after words.
fn recognize(
    audio: &[u8],
    finalised: &mut usize,
    interim_for: &mut Option<usize>,
    speaking: &mut bool,
    out: &mut Vec<String>,
) {
    while audio.len() >= *finalised + BLOCK_BYTES {
        let start = *finalised as f64 / 32_000.0;
        let value = sample_at(audio, *finalised);
        if value > 0 && !*speaking {
            *speaking = true;
            out.push(
                json!({"type": "SpeechStarted", "channel": [0], "timestamp": start}).to_string(),
            );
        }
        if value == 0 && *speaking {
            *speaking = false;
            out.push(
                json!({"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": start})
                    .to_string(),
            );
        }
        out.push(results(value, start, BLOCK_SECS, true, value == 0, false));
        *finalised += BLOCK_BYTES;
    }
    let open = audio.len() - *finalised;
    if open >= BLOCK_BYTES / 2 && *interim_for != Some(*finalised) {
        *interim_for = Some(*finalised);
        let value = sample_at(audio, *finalised);
        out.push(results(
            value,
            *finalised as f64 / 32_000.0,
            BLOCK_SECS / 2.0,
            false,
            false,
            false,
        ));
    }
}

fn sample_at(audio: &[u8], byte: usize) -> i16 {
    i16::from_le_bytes([audio[byte], audio[byte + 1]])
}

/// A `Results` message for coded word `value` (0: an empty transcript).
pub fn results(
    value: i16,
    start: f64,
    duration: f64,
    is_final: bool,
    speech_final: bool,
    from_finalize: bool,
) -> String {
    let (transcript, words) = if value > 0 {
        (
            format!("W{value}."),
            vec![json!({
                "word": format!("w{value}"), "start": start, "end": start + duration,
                "confidence": 0.9, "punctuated_word": format!("W{value}.")
            })],
        )
    } else {
        (String::new(), vec![])
    };
    json!({
        "type": "Results", "channel_index": [0, 1], "duration": duration, "start": start,
        "is_final": is_final, "speech_final": speech_final, "from_finalize": from_finalize,
        "channel": {"alternatives": [{"transcript": transcript, "confidence": 0.9, "words": words}]},
        "metadata": {"request_id": "stand-in", "model_info": {"name": "stand-in", "version": "0", "arch": "x"}, "model_uuid": "0"}
    })
    .to_string()
}

fn url_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Percent-decoding of a query component (`+` is a space, as `url` encodes it).
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap()
}
