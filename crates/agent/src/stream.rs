//! Streaming an audio input over a [`Session`]: frames read ahead on their own thread,
//! sent at real time ÷ speed, keepalives whenever the input stalls, acks watched all
//! along, the token refreshed before it expires (when the session has a token source),
//! then `close_stream` and the server's totals.

use std::future::Future;
use std::io::Read;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use crate::error::AgentError;
use crate::pacing::{frame_bytes, read_frame, Pacing};
use crate::session::{Event, Session, Totals};
use crate::wav::{self, PcmFormat, WavError};

/// Frames read ahead of the sender: a second of 20 ms frames, enough to absorb a slow
/// disk or pipe without holding a large file in memory.
const FRAME_QUEUE: usize = 50;
/// The first bytes of a RIFF-family file, by which input on a pipe is recognised as WAV.
const WAV_MAGICS: [&[u8; 4]; 3] = [b"RIFF", b"RIFX", b"RF64"];

/// Where the samples come from, with the header already read.
pub struct Input {
    /// The samples' format.
    pub format: PcmFormat,
    /// Bytes of samples, when known (the rest of the reader is not audio).
    pub data_len: Option<u64>,
    /// Positioned at the first sample.
    pub reader: Box<dyn Read + Send>,
}

/// Why [`Input::wav_or_raw`] refused its input.
#[derive(Debug, thiserror::Error)]
pub enum SniffError {
    /// Reading the first bytes failed.
    #[error("reading: {0}")]
    Read(#[source] std::io::Error),
    /// It starts like a WAV but the header is refused.
    #[error(transparent)]
    Wav(WavError),
    /// Raw PCM, but the format given for it is not one the protocol takes.
    #[error("raw PCM: {0}")]
    RawFormat(WavError),
}

impl Input {
    /// A WAV file: reads its header.
    pub fn wav(reader: impl Read + Send + 'static) -> Result<Input, WavError> {
        let mut reader = reader;
        let header = wav::read_header(&mut reader)?;
        Ok(Input { format: header.format, data_len: header.data_len, reader: Box::new(reader) })
    }

    /// A WAV if it starts like one, else raw interleaved s16le PCM of `raw` (what a pipe
    /// may carry).
    pub fn wav_or_raw(mut reader: impl Read + Send + 'static, raw: PcmFormat) -> Result<Input, SniffError> {
        let mut magic = [0u8; 4];
        let n = wav::read_up_to(&mut reader, &mut magic).map_err(SniffError::Read)?;
        let reader = std::io::Cursor::new(magic[..n].to_vec()).chain(reader);
        if WAV_MAGICS.iter().any(|m| &magic[..n] == *m) {
            return Input::wav(reader).map_err(SniffError::Wav);
        }
        let format = raw.validate().map_err(SniffError::RawFormat)?;
        Ok(Input { format, data_len: None, reader: Box::new(reader) })
    }

    /// Seconds of audio, when the length is known.
    pub fn seconds(&self) -> Option<f64> {
        self.data_len.map(|n| n as f64 / self.format.bytes_per_second() as f64)
    }
}

/// A stream that ended with `closed` and close 1000.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// What the agent sent.
    pub sent: Totals,
    /// What the server said it stored.
    pub stored: Totals,
}

impl Outcome {
    /// Whether the server stored exactly what was sent.
    pub fn matches(&self) -> bool {
        self.sent == self.stored
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verdict = if self.matches() { "match" } else { "MISMATCH" };
        write!(f, "sent {}; server stored {}: {verdict}", self.sent, self.stored)
    }
}

/// What a stream reports while it runs (a progress line, a log); every method defaults
/// to nothing.
pub trait Progress {
    /// A frame went out or an ack came in. `audio_s`: seconds of audio sent; `done` on
    /// the last report, after the input ended.
    fn update(&mut self, _audio_s: f64, _sent: Totals, _acked: Totals, _done: bool) {}
    /// The stream is about to end (successfully or not); a drawn line should be finished.
    fn finish(&mut self) {}
    /// The stop signal fired: what was sent is still closed and checked.
    fn interrupted(&mut self) {}
    /// A refresh went out with a token valid until `exp` (unix seconds).
    fn refreshed(&mut self, _exp: u64) {}
    /// The token source failed (`why`); it is asked again shortly.
    fn refresh_failed(&mut self, _why: &str) {}
}

/// Reports nothing.
impl Progress for () {}

/// Streams `input` over `session` paced by `pacing`, then closes the stream; returns what
/// was sent and what the server stored. When `stop` resolves, the input ends early and
/// the stream is closed as usual.
pub async fn stream_input<S>(
    mut session: Session<S>,
    input: Input,
    pacing: Pacing,
    progress: &mut impl Progress,
    stop: impl Future<Output = ()>,
) -> Result<Outcome, AgentError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let frame_bytes = frame_bytes(input.format, pacing.frame_ms, session.accepted().max_frame_bytes)?;
    let sample_rate = input.format.sample_rate;
    let align = input.format.block_align() as u64;
    let mut frames = spawn_frame_reader(input, frame_bytes)?;

    let start = tokio::time::Instant::now();
    let mut last_send = start;
    let mut pending: Option<Vec<u8>> = None;
    let mut input_done = false;
    tokio::pin!(stop);
    let mut stopped = false;
    let seconds = |bytes: u64| (bytes / align) as f64 / f64::from(sample_rate);
    let result: Result<(), AgentError> = async {
        while !(input_done && pending.is_none()) {
            let due = start + pacing.due_after(session.sent().bytes / align, sample_rate);
            let refresh_at = session.refresh_due();
            tokio::select! {
                biased;
                event = session.next_event() => {
                    // `closed` before close_stream is not ours to act on; a close is the error.
                    if let Event::Ack(_) = event? {
                        progress.update(seconds(session.sent().bytes), session.sent(), session.acked(), false);
                    }
                }
                _ = &mut stop, if !stopped => {
                    stopped = true;
                    progress.finish();
                    progress.interrupted();
                    input_done = true;
                    pending = None;
                }
                frame = frames.recv(), if pending.is_none() && !input_done => match frame {
                    Some(Ok(frame)) => pending = Some(frame),
                    Some(Err(e)) => return Err(AgentError::Input(e)),
                    None => input_done = true,
                },
                _ = tokio::time::sleep_until(due), if pending.is_some() => {
                    let frame = pending.take().expect("guarded by the branch condition");
                    session.send_frame(frame).await?;
                    last_send = tokio::time::Instant::now();
                    progress.update(seconds(session.sent().bytes), session.sent(), session.acked(), false);
                }
                _ = tokio::time::sleep_until(refresh_at.unwrap_or(due)), if refresh_at.is_some() => {
                    match session.refresh_from_source().await? {
                        Ok(exp) => progress.refreshed(exp),
                        Err(why) => progress.refresh_failed(&why),
                    }
                }
                _ = tokio::time::sleep_until(last_send + pacing.keepalive_after) => {
                    session.keepalive().await?;
                    last_send = tokio::time::Instant::now();
                }
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        progress.finish();
        return Err(e);
    }
    progress.update(seconds(session.sent().bytes), session.sent(), session.acked(), true);
    progress.finish();
    let sent = session.sent();
    let stored = session.close_stream().await?;
    Ok(Outcome { sent, stored })
}

/// Reads frames on a plain thread (stdin reads block and cannot be cancelled; the process
/// exit ends the thread), handing them over through a bounded queue.
fn spawn_frame_reader(input: Input, frame_bytes: usize) -> Result<mpsc::Receiver<std::io::Result<Vec<u8>>>, AgentError> {
    let (tx, rx) = mpsc::channel(FRAME_QUEUE);
    let align = input.format.block_align();
    let mut reader: Box<dyn Read + Send> = match input.data_len {
        Some(n) => Box::new(input.reader.take(n)),
        None => input.reader,
    };
    std::thread::Builder::new()
        .name("stream-input".into())
        .spawn(move || loop {
            match read_frame(&mut reader, frame_bytes, align) {
                Ok(Some(frame)) => {
                    if tx.blocking_send(Ok(frame)).is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        })
        .map_err(AgentError::Spawn)?;
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use earshot_protocol::ingest::{ClientMessage, ServerMessage};
    use futures::{SinkExt, StreamExt};
    use tokio::net::TcpListener;
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::Message;

    use super::*;
    use crate::connect::connect;

    const MONO_16K: PcmFormat = PcmFormat::MONO_16K;

    /// What the fake server saw.
    #[derive(Default)]
    struct Seen {
        authorization: Option<String>,
        handshake: Option<ClientMessage>,
        frames: Vec<Vec<u8>>,
        keepalives: usize,
    }

    /// How the fake server misbehaves.
    #[derive(Clone, Copy)]
    enum Script {
        /// The protocol, by the book.
        Honest,
        /// Closes with this code and reason instead of acking the handshake.
        Reject(u16, &'static str),
        /// Answers `closed` with one frame fewer than it got.
        LoseOne,
    }

    /// A minimal ingest server: the DESIGN.md protocol, in-process, so the client's side
    /// is tested whatever state the real backend is in.
    #[allow(clippy::result_large_err)] // tungstenite's handshake callback signature
    async fn fake_server(max_frame_bytes: usize, script: Script) -> (String, Arc<Mutex<Seen>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Seen::default()));
        let seen2 = seen.clone();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let seen3 = seen2.clone();
            let callback = move |req: &Request, resp: Response| {
                seen3.lock().unwrap().authorization =
                    req.headers().get("authorization").map(|v| v.to_str().unwrap().to_owned());
                Ok(resp)
            };
            let mut ws = tokio_tungstenite::accept_hdr_async(tcp, callback).await.unwrap();
            if let Script::Reject(code, reason) = script {
                let frame = CloseFrame { code: WsCloseCode::from(code), reason: reason.into() };
                ws.send(Message::Close(Some(frame))).await.unwrap();
                while ws.next().await.is_some() {}
                return;
            }
            let mut totals = Totals::default();
            while let Some(Ok(m)) = ws.next().await {
                match m {
                    Message::Text(t) => match ClientMessage::parse(&t).unwrap() {
                        h @ ClientMessage::Handshake(_) => {
                            seen2.lock().unwrap().handshake = Some(h);
                            let ack = ServerMessage::HandshakeAck { connection_id: "c".into(), session_id: "s".into(), max_frame_bytes };
                            ws.send(Message::text(ack.to_json())).await.unwrap();
                        }
                        ClientMessage::Keepalive => seen2.lock().unwrap().keepalives += 1,
                        ClientMessage::CloseStream => {
                            let lost = u64::from(matches!(script, Script::LoseOne));
                            let closed = ServerMessage::Closed { frames: totals.frames - lost, bytes: totals.bytes };
                            ws.send(Message::text(closed.to_json())).await.unwrap();
                            let frame = CloseFrame { code: WsCloseCode::Normal, reason: "stream closed".into() };
                            ws.send(Message::Close(Some(frame))).await.unwrap();
                        }
                    },
                    Message::Binary(b) => {
                        assert!(b.len() <= max_frame_bytes, "frame of {} bytes", b.len());
                        totals = totals.plus_frame(b.len());
                        seen2.lock().unwrap().frames.push(b.to_vec());
                        let ack = ServerMessage::Ack { frames: totals.frames, bytes: totals.bytes };
                        ws.send(Message::text(ack.to_json())).await.unwrap();
                    }
                    _ => {}
                }
            }
        });
        (url, seen)
    }

    fn input(pcm: Vec<u8>, format: PcmFormat) -> Input {
        let len = pcm.len() as u64;
        Input { format, data_len: Some(len), reader: Box::new(Cursor::new(pcm)) }
    }

    async fn run(url: &str, token: &str, input: Input, pacing: Pacing) -> Result<Outcome, AgentError> {
        let ws = connect(url, Some(token)).await?;
        let session = Session::handshake(ws, input.format).await?;
        stream_input(session, input, pacing, &mut (), std::future::pending()).await
    }

    #[tokio::test]
    async fn streams_every_byte_within_the_servers_frame_limit() {
        let (url, seen) = fake_server(1_000, Script::Honest).await;
        let format = PcmFormat { sample_rate: 48_000, channels: 2 };
        let pcm: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let outcome = run(&url, "tkn", input(pcm.clone(), format), Pacing::new(0.0, 20).unwrap()).await.unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(seen.authorization.as_deref(), Some("Bearer tkn"));
        assert!(matches!(&seen.handshake, Some(ClientMessage::Handshake(h)) if h.sample_rate == 48_000 && h.channels == 2));
        assert_eq!(seen.frames.concat(), pcm);
        assert!(seen.frames.iter().all(|f| f.len() % 4 == 0), "whole sample frames");
        assert_eq!(outcome, Outcome { sent: Totals { frames: 10, bytes: 10_000 }, stored: Totals { frames: 10, bytes: 10_000 } });
        assert_eq!(outcome.to_string(), "sent 10 frames / 10000 bytes; server stored 10 frames / 10000 bytes: match");
    }

    #[tokio::test]
    async fn totals_that_differ_are_reported_as_a_mismatch() {
        let (url, _) = fake_server(65_536, Script::LoseOne).await;
        let outcome = run(&url, "t", input(vec![1; 1_280], MONO_16K), Pacing::new(0.0, 20).unwrap()).await.unwrap();
        assert_eq!(outcome.sent, Totals { frames: 2, bytes: 1_280 });
        assert_eq!(outcome.stored, Totals { frames: 1, bytes: 1_280 });
        assert!(!outcome.matches());
        assert!(outcome.to_string().ends_with(": MISMATCH"), "{outcome}");
    }

    #[tokio::test]
    async fn paces_at_real_time_divided_by_speed() {
        let (url, _) = fake_server(65_536, Script::Honest).await;
        // 0.4 s of audio at speed 2 takes about 0.2 s (the first frame goes at once).
        let started = Instant::now();
        run(&url, "t", input(vec![0; 12_800], MONO_16K), Pacing::new(2.0, 20).unwrap()).await.unwrap();
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(180) && took < Duration::from_secs(2), "{took:?}");
    }

    #[tokio::test]
    async fn a_stalled_input_sends_keepalives() {
        // Two 125 ms frames at half speed: 250 ms apart, with a keepalive due after 40 ms
        // of silence, so several go out in between (and none while frames flow).
        let (url, seen) = fake_server(65_536, Script::Honest).await;
        let pacing = Pacing { keepalive_after: Duration::from_millis(40), ..Pacing::new(0.5, 125).unwrap() };
        let started = Instant::now();
        let outcome = run(&url, "t", input(vec![0; 8_000], MONO_16K), pacing).await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(240), "{:?}", started.elapsed());
        assert!(outcome.matches(), "{outcome}");
        let keepalives = seen.lock().unwrap().keepalives;
        assert!((3..=6).contains(&keepalives), "{keepalives} keepalives in 250 ms of silence at one per 40 ms");
    }

    #[tokio::test]
    async fn a_close_before_the_ack_is_reported_with_its_code() {
        let (url, _) = fake_server(65_536, Script::Reject(1008, "auth failed: bad signature")).await;
        let err = run(&url, "t", input(vec![0; 640], MONO_16K), Pacing::new(0.0, 20).unwrap()).await.unwrap_err();
        assert!(matches!(&err, AgentError::Closed { code: 1008, reason, .. } if reason == "auth failed: bad signature"), "{err:?}");
        assert_eq!(err.close_code(), Some(1008));
        assert_eq!(err.to_string(), "closed by server: 1008 auth failed: bad signature");
    }

    #[tokio::test]
    async fn a_frame_over_the_servers_limit_is_refused_before_sending() {
        let (url, seen) = fake_server(1_000, Script::Honest).await;
        let ws = connect(&url, None).await.unwrap();
        let mut session = Session::handshake(ws, MONO_16K).await.unwrap();
        assert_eq!(session.accepted().max_frame_bytes, 1_000);
        let err = session.send_frame(vec![0; 1_002]).await.unwrap_err();
        assert!(matches!(err, AgentError::FrameTooLarge { size: 1_002, max_size: 1_000 }), "{err:?}");
        session.send_frame(vec![0; 1_000]).await.unwrap();
        assert_eq!(session.sent(), Totals { frames: 1, bytes: 1_000 });
        assert_eq!(session.close_stream().await.unwrap(), Totals { frames: 1, bytes: 1_000 });
        assert_eq!(seen.lock().unwrap().frames.len(), 1);
    }

    #[test]
    fn a_pipe_is_a_wav_when_it_starts_like_one_else_raw_pcm() {
        let mut file = wav::header_bytes(MONO_16K, 4).to_vec();
        file.extend_from_slice(&[1, 2, 3, 4]);
        let stereo = PcmFormat { sample_rate: 48_000, channels: 2 };
        let wav_input = Input::wav_or_raw(Cursor::new(file), stereo).unwrap();
        assert_eq!((wav_input.format, wav_input.data_len), (MONO_16K, Some(4)));

        let mut raw = Input::wav_or_raw(Cursor::new(vec![9u8; 10]), stereo).unwrap();
        assert_eq!((raw.format, raw.data_len), (stereo, None));
        let mut all = Vec::new();
        raw.reader.read_to_end(&mut all).unwrap();
        assert_eq!(all, [9u8; 10], "the sniffed bytes are not lost");

        let odd_rate = PcmFormat { sample_rate: 11_025, channels: 1 };
        assert!(matches!(Input::wav_or_raw(Cursor::new(vec![0u8; 8]), odd_rate), Err(SniffError::RawFormat(_))));
        assert!(matches!(Input::wav_or_raw(Cursor::new(b"RIFFjunk".to_vec()), stereo), Err(SniffError::Wav(_))));
        assert_eq!(Input::wav(Cursor::new(wav::header_bytes(MONO_16K, 32_000).to_vec())).unwrap().seconds(), Some(1.0));
    }
}
