//! `earshot stream`: the capture agent's stand-in. Streams a WAV file (or raw PCM on stdin)
//! to the ingest WebSocket at real time ÷ `--speed`, following the ingest protocol
//! (DESIGN.md), and checks that the server stored exactly what was sent.

use std::io::{IsTerminal, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use earshot_protocol::close::CloseCode;
use earshot_protocol::ids::{MeetingId, Source};
use earshot_protocol::ingest::{ClientMessage, Handshake, ServerMessage, ENCODING_PCM_S16LE, PROTOCOL_VERSION};
use earshot_protocol::limits::DEFAULT_IDLE_TIMEOUT_MS;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use crate::token_cmd::{self, Mint, StateDirArg};
use crate::wav::{self, PcmFormat};

/// Exit codes of `earshot stream`, one per kind of failure, so scripts can tell them apart.
pub(crate) mod exit {
    /// The server closed 1000 and stored exactly what was sent.
    pub(crate) const OK: u8 = 0;
    /// Anything else (no token could be minted, the OS refused a thread, …).
    pub(crate) const ERROR: u8 = 1;
    /// Bad flags (same code clap uses for its own usage errors).
    pub(crate) const USAGE: u8 = 2;
    /// The input is unreadable or not a format the protocol takes.
    pub(crate) const BAD_INPUT: u8 = 3;
    /// No WebSocket: connection refused, upgrade refused (HTTP status), or it dropped
    /// without a close frame.
    pub(crate) const CONNECTION: u8 = 4;
    /// The server closed with a code other than 1000, or closed 1000 before `closed`.
    pub(crate) const CLOSED_BY_SERVER: u8 = 5;
    /// Closed 1000, but the server's totals differ from what was sent.
    pub(crate) const MISMATCH: u8 = 6;
    /// The server did not answer within one of the bounded waits.
    pub(crate) const TIMEOUT: u8 = 7;
}

/// Longest wait for the TCP connect and WebSocket upgrade.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for `handshake_ack`: the server's own handshake timeout is 5 s, so by
/// 10 s it has either answered or closed; the rest covers a cold backend.
const HANDSHAKE_ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest silence from the server after `close_stream` before `closed`: the server may
/// still be appending a backlog (at `--speed 0`), so every ack restarts this wait.
const CLOSED_QUIET_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the close frame after `closed`.
const CLOSE_FRAME_TIMEOUT: Duration = Duration::from_secs(5);
/// After a failed send, how long to look for the close frame that explains it.
const CLOSE_EXPLAIN_GRACE: Duration = Duration::from_secs(2);
/// Keepalive after this long without sending: a third of the server's idle timeout, so
/// a stalled input (a paused pipe, a slow `--speed`) never gets the stream closed as idle.
const KEEPALIVE_AFTER: Duration = Duration::from_millis(DEFAULT_IDLE_TIMEOUT_MS / 3);
/// Longest frame duration, ms: the protocol's frames are 20–100 ms; a second is plenty.
const MAX_FRAME_MS: u32 = 1_000;
/// Frames read ahead of the sender: a second of 20 ms frames, enough to absorb a slow
/// disk or pipe without holding a large file in memory.
const FRAME_QUEUE: usize = 50;
/// Server messages buffered between the socket reader and the sender.
const EVENT_QUEUE: usize = 64;
/// How often the progress line is redrawn at most.
const PROGRESS_REDRAW: Duration = Duration::from_millis(100);
/// The `sub` of a token minted for streaming (as `earshot token` defaults to).
const MINTED_SUB: &str = "dev";

/// `earshot stream` flags.
#[derive(clap::Args)]
pub(crate) struct StreamArgs {
    /// A 16-bit PCM WAV file, or `-` for stdin (a WAV, or raw s16le PCM described by
    /// --sample-rate and --channels).
    input: String,
    /// The meeting to stream into.
    #[arg(long)]
    meeting: String,
    /// Which source this stream is: `mic` or `sys` (alias `system`).
    #[arg(long, default_value = "mic")]
    source: String,
    /// Earshot's base URL.
    #[arg(long, default_value = "ws://127.0.0.1:3000", env = "EARSHOT_URL")]
    url: String,
    /// Bearer token with scope `ingest` (default: mint one like
    /// `earshot token --scope ingest --meeting <id>`).
    #[arg(long, env = "EARSHOT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Playback speed: 1 is real time, 2 twice as fast, 0 as fast as possible.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    speed: f64,
    /// Audio per binary frame, milliseconds (capped by the server's max_frame_bytes).
    #[arg(long, default_value_t = 20)]
    frame_ms: u32,
    /// Sample rate of raw PCM on stdin, Hz.
    #[arg(long, default_value_t = 16_000)]
    sample_rate: u32,
    /// Channels of raw PCM on stdin.
    #[arg(long, default_value_t = 1)]
    channels: u16,
    #[command(flatten)]
    state: StateDirArg,
}

/// Frames and bytes, as the protocol counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub(crate) frames: u64,
    pub(crate) bytes: u64,
}

impl std::fmt::Display for Totals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} frames / {} bytes", self.frames, self.bytes)
    }
}

/// A stream that ended with `closed` and close 1000.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub(crate) sent: Totals,
    pub(crate) stored: Totals,
}

impl Outcome {
    /// The final stdout line.
    fn summary(&self) -> String {
        let verdict = if self.sent == self.stored { "match" } else { "MISMATCH" };
        format!("sent {}; server stored {}: {verdict}", self.sent, self.stored)
    }
}

/// Why a stream failed.
#[derive(Debug)]
pub(crate) enum Failure {
    Usage(String),
    Input(String),
    Other(String),
    Connection(String),
    Closed { code: u16, reason: String, sent: Totals },
    Timeout(String),
}

impl Failure {
    fn exit_code(&self) -> u8 {
        match self {
            Failure::Usage(_) => exit::USAGE,
            Failure::Input(_) => exit::BAD_INPUT,
            Failure::Other(_) => exit::ERROR,
            Failure::Connection(_) => exit::CONNECTION,
            Failure::Closed { .. } => exit::CLOSED_BY_SERVER,
            Failure::Timeout(_) => exit::TIMEOUT,
        }
    }

    fn report(&self) {
        match self {
            Failure::Closed { code, reason, sent } => {
                println!("closed by server: {code} {reason}");
                eprintln!("earshot stream: had sent {sent} when the server closed the stream{}", close_hint(*code));
            }
            Failure::Usage(m) | Failure::Input(m) | Failure::Other(m) | Failure::Connection(m) | Failure::Timeout(m) => {
                eprintln!("earshot stream: {m}")
            }
        }
    }
}

/// What to do about a close code (DESIGN.md "Close codes").
fn close_hint(code: u16) -> &'static str {
    match CloseCode::from_code(code) {
        Some(CloseCode::PolicyViolation) => " (check the token: scope `ingest`, this meeting, the server's secret)",
        Some(CloseCode::TryAgainLater) => " (rate limited: try again in a few seconds)",
        Some(CloseCode::InternalError) => " (server or Redis failure: retry with backoff)",
        Some(CloseCode::GoingAway) => " (server shutting down: reconnect)",
        _ => "",
    }
}

/// Runs `earshot stream`; returns the process exit code.
pub(crate) async fn run(args: StreamArgs) -> u8 {
    match stream(args).await {
        Ok(outcome) => {
            println!("{}", outcome.summary());
            if outcome.sent == outcome.stored {
                exit::OK
            } else {
                exit::MISMATCH
            }
        }
        Err(failure) => {
            failure.report();
            failure.exit_code()
        }
    }
}

/// Where the samples come from, with the header already read.
pub(crate) struct Input {
    pub(crate) format: PcmFormat,
    /// Bytes of samples, when known.
    pub(crate) data_len: Option<u64>,
    pub(crate) reader: Box<dyn Read + Send>,
}

/// How frames are cut and paced.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pacing {
    pub(crate) speed: f64,
    pub(crate) frame_ms: u32,
}

async fn stream(args: StreamArgs) -> Result<Outcome, Failure> {
    let meeting = MeetingId::parse(&args.meeting)
        .map_err(|_| Failure::Usage(format!("invalid --meeting {:?}: 1-128 characters of [A-Za-z0-9._-]", args.meeting)))?;
    let source = Source::parse(&args.source)
        .map_err(|_| Failure::Usage(format!("invalid --source {:?}: mic, sys or system", args.source)))?;
    let pacing = Pacing { speed: args.speed, frame_ms: args.frame_ms };
    if !(pacing.speed.is_finite() && pacing.speed >= 0.0) {
        return Err(Failure::Usage("--speed must be 0 (as fast as possible) or a positive number".into()));
    }
    if !(1..=MAX_FRAME_MS).contains(&pacing.frame_ms) {
        return Err(Failure::Usage(format!("--frame-ms must be 1..={MAX_FRAME_MS}")));
    }
    let input = open_input(&args)?;
    let url = ingest_url(&args.url, &meeting, source)?;
    let token = match args.token {
        Some(t) => t,
        None => token_cmd::mint(
            &args.state.resolve(),
            Mint { sub: MINTED_SUB, scope: "ingest", meetings: vec![meeting.to_string()], ttl_s: earshot_auth::DEFAULT_TOKEN_TTL_S },
        )
        .map_err(|e| Failure::Other(format!("no --token given and minting one failed: {e:#}")))?,
    };
    let total = input.data_len.map(|n| n as f64 / input.format.bytes_per_second() as f64);
    eprintln!(
        "streaming {} ({} Hz, {} ch{}) to {url}",
        if args.input == "-" { "stdin" } else { &args.input },
        input.format.sample_rate,
        input.format.channels,
        total.map(|s| format!(", {s:.1} s")).unwrap_or_default(),
    );
    session(&url, &token, input, pacing, Progress::new(std::io::stderr().is_terminal(), total)).await
}

/// Opens the file (must be a WAV) or stdin (a WAV if it starts like one, else raw PCM).
fn open_input(args: &StreamArgs) -> Result<Input, Failure> {
    let bad = |e: wav::WavError| Failure::Input(format!("{}: {e}", if args.input == "-" { "stdin" } else { &args.input }));
    if args.input != "-" {
        let path = Path::new(&args.input);
        let file = std::fs::File::open(path).map_err(|e| Failure::Input(format!("opening {}: {e}", path.display())))?;
        let mut reader = std::io::BufReader::new(file);
        let header = wav::read_header(&mut reader).map_err(bad)?;
        return Ok(Input { format: header.format, data_len: header.data_len, reader: Box::new(reader) });
    }
    let mut stdin = std::io::stdin();
    let mut magic = [0u8; 4];
    let n = wav::read_up_to(&mut stdin, &mut magic).map_err(|e| Failure::Input(format!("reading stdin: {e}")))?;
    let mut reader = std::io::Cursor::new(magic[..n].to_vec()).chain(stdin);
    if matches!(&magic[..n], b"RIFF" | b"RIFX" | b"RF64") {
        let header = wav::read_header(&mut reader).map_err(bad)?;
        return Ok(Input { format: header.format, data_len: header.data_len, reader: Box::new(reader) });
    }
    let format = PcmFormat { sample_rate: args.sample_rate, channels: args.channels }
        .validate()
        .map_err(|e| Failure::Usage(format!("raw PCM on stdin: {e}")))?;
    Ok(Input { format, data_len: None, reader: Box::new(reader) })
}

/// `{base}/api/v1/ws/ingest/meetings/{id}?source=…`, taking http(s) bases as ws(s).
pub(crate) fn ingest_url(base: &str, meeting: &MeetingId, source: Source) -> Result<String, Failure> {
    let base = base.trim_end_matches('/');
    let base = if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if base.starts_with("ws://") || base.starts_with("wss://") {
        base.to_owned()
    } else {
        return Err(Failure::Usage(format!("--url {base:?} must start with ws:// (or http://)")));
    };
    Ok(format!("{base}/api/v1/ws/ingest/meetings/{meeting}?source={source}"))
}

/// Bytes per binary frame: `frame_ms` of audio in whole sample frames, at most
/// `max_frame_bytes` (the server's limit) and at least one sample frame.
pub(crate) fn frame_bytes(format: PcmFormat, frame_ms: u32, max_frame_bytes: usize) -> Result<usize, String> {
    let align = format.block_align();
    let largest = max_frame_bytes - max_frame_bytes % align;
    if largest == 0 {
        return Err(format!("the server's max_frame_bytes ({max_frame_bytes}) is smaller than one sample frame ({align} bytes)"));
    }
    let samples = (u64::from(format.sample_rate) * u64::from(frame_ms) / 1000).max(1);
    let wanted = usize::try_from(samples).unwrap_or(usize::MAX).saturating_mul(align);
    Ok(wanted.min(largest))
}

/// When the frame starting at sample frame `samples_sent` is due, after the start.
pub(crate) fn due_after(samples_sent: u64, sample_rate: u32, speed: f64) -> Duration {
    if speed == 0.0 {
        return Duration::ZERO;
    }
    Duration::try_from_secs_f64(samples_sent as f64 / f64::from(sample_rate) / speed).unwrap_or(Duration::MAX)
}

/// The next frame of at most `frame_bytes`, in whole sample frames; `None` at the end (a
/// trailing partial sample frame is dropped: it is not audio).
pub(crate) fn read_frame(input: &mut impl Read, frame_bytes: usize, block_align: usize) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; frame_bytes];
    let n = wav::read_up_to(input, &mut buf)?;
    let whole = n - n % block_align;
    if whole == 0 {
        return Ok(None);
    }
    buf.truncate(whole);
    Ok(Some(buf))
}

/// Reads frames on a plain thread (stdin reads block and cannot be cancelled; the process
/// exit ends the thread), handing them over through a bounded queue.
fn spawn_frame_reader(input: Input, frame_bytes: usize) -> Result<mpsc::Receiver<std::io::Result<Vec<u8>>>, Failure> {
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
        .map_err(|e| Failure::Other(format!("starting the input reader: {e}")))?;
    Ok(rx)
}

/// What the socket reader saw.
#[derive(Debug)]
enum Incoming {
    Server(ServerMessage),
    /// Text that is not a server message of this protocol.
    Unknown,
    Close { code: u16, reason: String },
    /// The connection failed or ended without a close frame.
    Lost(String),
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn read_socket(mut stream: SplitStream<Ws>, tx: mpsc::Sender<Incoming>) {
    let mut closed = false;
    // Keep reading after the close frame: that is what sends tungstenite's close reply.
    while let Some(message) = stream.next().await {
        let event = match message {
            Ok(Message::Text(text)) => match serde_json::from_str::<ServerMessage>(&text) {
                Ok(m) => Incoming::Server(m),
                Err(_) => Incoming::Unknown,
            },
            Ok(Message::Close(frame)) => {
                closed = true;
                match frame {
                    Some(CloseFrame { code, reason }) => Incoming::Close { code: u16::from(code), reason: reason.to_string() },
                    None => Incoming::Close { code: 1005, reason: String::new() },
                }
            }
            Ok(_) => continue,
            Err(_) if closed => return,
            Err(e) => {
                let _ = tx.send(Incoming::Lost(e.to_string())).await;
                return;
            }
        };
        if tx.send(event).await.is_err() {
            return;
        }
    }
    if !closed {
        let _ = tx.send(Incoming::Lost("connection ended without a close frame".into())).await;
    }
}

/// The progress line on stderr (only on a terminal).
pub(crate) struct Progress {
    enabled: bool,
    total_s: Option<f64>,
    last: Option<Instant>,
    drawn: bool,
}

impl Progress {
    pub(crate) fn new(enabled: bool, total_s: Option<f64>) -> Self {
        Progress { enabled, total_s, last: None, drawn: false }
    }

    fn draw(&mut self, sent_s: f64, sent: Totals, acked: Totals, force: bool) {
        if !self.enabled || (!force && self.last.is_some_and(|t| t.elapsed() < PROGRESS_REDRAW)) {
            return;
        }
        self.last = Some(Instant::now());
        self.drawn = true;
        let total = self.total_s.map(|t| format!(" / {t:.1} s")).unwrap_or_default();
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{sent_s:.1} s{total} sent ({} frames), {} acked", sent.frames, acked.frames);
        let _ = err.flush();
    }

    fn finish(&mut self) {
        if self.drawn {
            eprintln!();
            self.drawn = false;
        }
    }
}

/// Sends one message; if that fails, the close frame that explains it (if any) is the failure.
async fn send(sink: &mut SplitSink<Ws, Message>, events: &mut mpsc::Receiver<Incoming>, message: Message, sent: Totals) -> Result<(), Failure> {
    match sink.send(message).await {
        Ok(()) => Ok(()),
        Err(e) => {
            let deadline = tokio::time::Instant::now() + CLOSE_EXPLAIN_GRACE;
            while let Ok(Some(event)) = tokio::time::timeout_at(deadline, events.recv()).await {
                if let Incoming::Close { code, reason } = event {
                    return Err(Failure::Closed { code, reason, sent });
                }
            }
            Err(Failure::Connection(format!("sending failed: {e}")))
        }
    }
}

/// Connects, handshakes, streams `input` and closes; the server's totals on success.
pub(crate) async fn session(url: &str, token: &str, input: Input, pacing: Pacing, mut progress: Progress) -> Result<Outcome, Failure> {
    let mut request = url.into_client_request().map_err(|e| Failure::Usage(format!("bad --url {url}: {e}")))?;
    let bearer = format!("Bearer {token}")
        .parse()
        .map_err(|_| Failure::Usage("the token contains characters an HTTP header cannot carry".into()))?;
    request.headers_mut().insert(AUTHORIZATION, bearer);
    let ws = match tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(request)).await {
        Err(_) => return Err(Failure::Timeout(format!("no WebSocket connection to {url} within {CONNECT_TIMEOUT:?}"))),
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(response))) => {
            return Err(Failure::Connection(format!("the server refused the WebSocket upgrade: HTTP {}", response.status())))
        }
        Ok(Err(e)) => return Err(Failure::Connection(format!("connecting to {url}: {e}"))),
        Ok(Ok((ws, _))) => ws,
    };
    let (mut sink, stream) = ws.split();
    let (events_tx, mut events) = mpsc::channel(EVENT_QUEUE);
    tokio::spawn(read_socket(stream, events_tx));

    let mut sent = Totals::default();
    let handshake = ClientMessage::Handshake(Handshake {
        protocol: PROTOCOL_VERSION,
        encoding: ENCODING_PCM_S16LE.to_owned(),
        sample_rate: input.format.sample_rate,
        channels: u32::from(input.format.channels),
    });
    send(&mut sink, &mut events, Message::text(handshake.to_json()), sent).await?;
    let max_frame_bytes = wait_for_ack(&mut events, sent).await?;
    let frame_bytes = frame_bytes(input.format, pacing.frame_ms, max_frame_bytes).map_err(Failure::Other)?;
    let sample_rate = input.format.sample_rate;
    let align = input.format.block_align() as u64;
    let mut frames = spawn_frame_reader(input, frame_bytes)?;

    // Stream: pace frames, keep alive, and watch the server at the same time.
    let start = tokio::time::Instant::now();
    let mut last_send = start;
    let mut acked = Totals::default();
    let mut pending: Option<Vec<u8>> = None;
    let mut input_done = false;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let seconds = |bytes: u64| (bytes / align) as f64 / f64::from(sample_rate);
    while !(input_done && pending.is_none()) {
        let due = start + due_after(sent.bytes / align, sample_rate, pacing.speed);
        tokio::select! {
            biased;
            event = events.recv() => match event {
                Some(Incoming::Server(ServerMessage::Ack { frames, bytes })) => {
                    acked = Totals { frames, bytes };
                    progress.draw(seconds(sent.bytes), sent, acked, false);
                }
                Some(Incoming::Close { code, reason }) => {
                    progress.finish();
                    return Err(Failure::Closed { code, reason, sent });
                }
                Some(Incoming::Lost(e)) => {
                    progress.finish();
                    return Err(Failure::Connection(e));
                }
                None => {
                    progress.finish();
                    return Err(Failure::Connection("connection ended".into()));
                }
                Some(_) => {}
            },
            _ = &mut ctrl_c => {
                // Stop cleanly: what was sent is still closed and checked.
                progress.finish();
                eprintln!("earshot stream: interrupted, closing the stream");
                input_done = true;
                pending = None;
            }
            frame = frames.recv(), if pending.is_none() && !input_done => match frame {
                Some(Ok(frame)) => pending = Some(frame),
                Some(Err(e)) => {
                    progress.finish();
                    return Err(Failure::Input(format!("reading the input: {e}")));
                }
                None => input_done = true,
            },
            _ = tokio::time::sleep_until(due), if pending.is_some() => {
                let frame = pending.take().expect("guarded by the branch condition");
                let len = frame.len() as u64;
                send(&mut sink, &mut events, Message::binary(frame), sent).await?;
                sent.frames += 1;
                sent.bytes += len;
                last_send = tokio::time::Instant::now();
                progress.draw(seconds(sent.bytes), sent, acked, false);
            }
            _ = tokio::time::sleep_until(last_send + KEEPALIVE_AFTER) => {
                send(&mut sink, &mut events, Message::text(ClientMessage::Keepalive.to_json()), sent).await?;
                last_send = tokio::time::Instant::now();
            }
        }
    }
    progress.draw(seconds(sent.bytes), sent, acked, true);
    progress.finish();

    send(&mut sink, &mut events, Message::text(ClientMessage::CloseStream.to_json()), sent).await?;
    let stored = wait_for_closed(&mut events, sent).await?;
    match tokio::time::timeout(CLOSE_FRAME_TIMEOUT, wait_for_close_frame(&mut events)).await {
        Ok(Ok((code, _))) if code == CloseCode::Normal.code() => Ok(Outcome { sent, stored }),
        Ok(Ok((code, reason))) => Err(Failure::Closed { code, reason, sent }),
        Ok(Err(e)) => Err(Failure::Connection(format!("after `closed`: {e}"))),
        Err(_) => {
            let _ = sink.close().await;
            Err(Failure::Timeout(format!("the server sent `closed` ({stored}) but no close frame within {CLOSE_FRAME_TIMEOUT:?}")))
        }
    }
}

async fn wait_for_ack(events: &mut mpsc::Receiver<Incoming>, sent: Totals) -> Result<usize, Failure> {
    let deadline = tokio::time::Instant::now() + HANDSHAKE_ACK_TIMEOUT;
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .map_err(|_| Failure::Timeout(format!("no handshake_ack within {HANDSHAKE_ACK_TIMEOUT:?}")))?;
        match event {
            Some(Incoming::Server(ServerMessage::HandshakeAck { session_id, max_frame_bytes, .. })) => {
                eprintln!("session {session_id}: handshake accepted (max_frame_bytes {max_frame_bytes})");
                return Ok(max_frame_bytes);
            }
            Some(Incoming::Close { code, reason }) => return Err(Failure::Closed { code, reason, sent }),
            Some(Incoming::Lost(e)) => return Err(Failure::Connection(e)),
            None => return Err(Failure::Connection("connection ended before handshake_ack".into())),
            Some(_) => {}
        }
    }
}

async fn wait_for_closed(events: &mut mpsc::Receiver<Incoming>, sent: Totals) -> Result<Totals, Failure> {
    loop {
        let event = tokio::time::timeout(CLOSED_QUIET_TIMEOUT, events.recv())
            .await
            .map_err(|_| Failure::Timeout(format!("no `closed` from the server within {CLOSED_QUIET_TIMEOUT:?} of close_stream")))?;
        match event {
            Some(Incoming::Server(ServerMessage::Closed { frames, bytes })) => return Ok(Totals { frames, bytes }),
            Some(Incoming::Close { code, reason }) => return Err(Failure::Closed { code, reason, sent }),
            Some(Incoming::Lost(e)) => return Err(Failure::Connection(e)),
            None => return Err(Failure::Connection("connection ended before `closed`".into())),
            Some(_) => {}
        }
    }
}

async fn wait_for_close_frame(events: &mut mpsc::Receiver<Incoming>) -> Result<(u16, String), String> {
    loop {
        match events.recv().await {
            Some(Incoming::Close { code, reason }) => return Ok((code, reason)),
            Some(Incoming::Lost(e)) => return Err(e),
            None => return Err("connection ended without a close frame".into()),
            Some(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;
    use std::sync::{Arc, Mutex};

    use tokio::net::TcpListener;
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;

    use super::*;

    const MONO_16K: PcmFormat = PcmFormat { sample_rate: 16_000, channels: 1 };

    #[test]
    fn frames_are_whole_sample_frames_within_the_server_limit() {
        assert_eq!(frame_bytes(MONO_16K, 20, 65_536), Ok(640));
        let stereo_44k = PcmFormat { sample_rate: 44_100, channels: 2 };
        assert_eq!(frame_bytes(stereo_44k, 20, 65_536), Ok(882 * 4));
        // Capped by max_frame_bytes, rounded down to whole sample frames.
        assert_eq!(frame_bytes(stereo_44k, 1000, 1_001), Ok(1_000));
        // Never below one sample frame, never above the server's limit.
        assert_eq!(frame_bytes(PcmFormat { sample_rate: 8_000, channels: 1 }, 1, 65_536), Ok(16));
        assert!(frame_bytes(stereo_44k, 20, 3).is_err());
    }

    #[test]
    fn pacing_follows_the_samples_sent() {
        assert_eq!(due_after(16_000, 16_000, 1.0), Duration::from_secs(1));
        assert_eq!(due_after(16_000, 16_000, 2.0), Duration::from_millis(500));
        assert_eq!(due_after(16_000, 16_000, 0.0), Duration::ZERO);
        assert_eq!(due_after(0, 16_000, 1.0), Duration::ZERO);
    }

    #[test]
    fn reading_frames_drops_a_trailing_partial_sample() {
        let mut input = Cursor::new(vec![7u8; 1_001]);
        let mut sizes = Vec::new();
        while let Some(f) = read_frame(&mut input, 640, 2).unwrap() {
            sizes.push(f.len());
        }
        assert_eq!(sizes, [640, 360]);
    }

    #[test]
    fn urls_name_the_ingest_route() {
        let m = MeetingId::parse("m1").unwrap();
        assert_eq!(ingest_url("ws://h:1/", &m, Source::Sys).unwrap(), "ws://h:1/api/v1/ws/ingest/meetings/m1?source=sys");
        assert_eq!(ingest_url("http://h:1", &m, Source::Mic).unwrap(), "ws://h:1/api/v1/ws/ingest/meetings/m1?source=mic");
        assert!(ingest_url("h:1", &m, Source::Mic).is_err());
    }

    /// What the fake server saw.
    #[derive(Default)]
    struct Seen {
        authorization: Option<String>,
        handshake: Option<ClientMessage>,
        frames: Vec<Vec<u8>>,
    }

    /// A minimal ingest server: the DESIGN.md protocol, in-process, so the client's side
    /// is tested whatever state the real backend is in.
    #[allow(clippy::result_large_err)] // tungstenite's handshake callback signature
    async fn fake_server(max_frame_bytes: usize, reject: Option<(u16, &'static str)>) -> (String, Arc<Mutex<Seen>>) {
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
            if let Some((code, reason)) = reject {
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
                        ClientMessage::Keepalive => {}
                        ClientMessage::CloseStream => {
                            let closed = ServerMessage::Closed { frames: totals.frames, bytes: totals.bytes };
                            ws.send(Message::text(closed.to_json())).await.unwrap();
                            let frame = CloseFrame { code: WsCloseCode::Normal, reason: "stream closed".into() };
                            ws.send(Message::Close(Some(frame))).await.unwrap();
                        }
                    },
                    Message::Binary(b) => {
                        assert!(b.len() <= max_frame_bytes, "frame of {} bytes", b.len());
                        totals.frames += 1;
                        totals.bytes += b.len() as u64;
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

    #[tokio::test]
    async fn streams_every_byte_within_the_servers_frame_limit() {
        let (url, seen) = fake_server(1_000, None).await;
        let format = PcmFormat { sample_rate: 48_000, channels: 2 };
        let pcm: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let pacing = Pacing { speed: 0.0, frame_ms: 20 };
        let outcome = session(&url, "tkn", input(pcm.clone(), format), pacing, Progress::new(false, None)).await.unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(seen.authorization.as_deref(), Some("Bearer tkn"));
        assert!(matches!(&seen.handshake, Some(ClientMessage::Handshake(h)) if h.sample_rate == 48_000 && h.channels == 2));
        assert_eq!(seen.frames.concat(), pcm);
        assert!(seen.frames.iter().all(|f| f.len() % 4 == 0), "whole sample frames");
        assert_eq!(outcome, Outcome { sent: Totals { frames: 10, bytes: 10_000 }, stored: Totals { frames: 10, bytes: 10_000 } });
        assert_eq!(outcome.summary(), "sent 10 frames / 10000 bytes; server stored 10 frames / 10000 bytes: match");
    }

    #[tokio::test]
    async fn paces_at_real_time_divided_by_speed() {
        let (url, _) = fake_server(65_536, None).await;
        // 0.4 s of audio at speed 2 takes about 0.2 s (the first frame goes at once).
        let started = Instant::now();
        let pacing = Pacing { speed: 2.0, frame_ms: 20 };
        session(&url, "t", input(vec![0; 12_800], MONO_16K), pacing, Progress::new(false, None)).await.unwrap();
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(180) && took < Duration::from_secs(2), "{took:?}");
    }

    #[tokio::test]
    async fn a_close_before_the_ack_is_reported_with_its_code() {
        let (url, _) = fake_server(65_536, Some((1008, "auth failed: bad signature"))).await;
        let pacing = Pacing { speed: 0.0, frame_ms: 20 };
        let failure = session(&url, "t", input(vec![0; 640], MONO_16K), pacing, Progress::new(false, None)).await.unwrap_err();
        assert!(matches!(&failure, Failure::Closed { code: 1008, reason, .. } if reason == "auth failed: bad signature"), "{failure:?}");
        assert_eq!(failure.exit_code(), exit::CLOSED_BY_SERVER);
    }

    #[tokio::test]
    async fn a_refused_port_is_a_connection_failure() {
        let port = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
        let pacing = Pacing { speed: 0.0, frame_ms: 20 };
        let url = format!("ws://127.0.0.1:{port}/api/v1/ws/ingest/meetings/m?source=mic");
        let failure = session(&url, "t", input(vec![0; 640], MONO_16K), pacing, Progress::new(false, None)).await.unwrap_err();
        assert_eq!(failure.exit_code(), exit::CONNECTION, "{failure:?}");
    }
}
