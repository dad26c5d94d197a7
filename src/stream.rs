//! `earshot stream`: the capture agent's stand-in. Streams a WAV file (or raw PCM on stdin)
//! to the ingest WebSocket at real time ÷ `--speed` with `earshot_agent`, and checks that
//! the server stored exactly what was sent. This file holds the flags, the words and the
//! exit codes; the protocol is the agent crate's.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use earshot_agent::error::close_hint;
use earshot_agent::pacing::{PacingError, MAX_FRAME_MS};
use earshot_agent::stream::SniffError;
use earshot_agent::refresh::Fresh;
use earshot_agent::{AgentError, Input, Outcome, Pacing, PcmFormat, Session, TokenSource, Totals};
use earshot_protocol::ids::{MeetingId, Source};
use earshot_protocol::lifetime::unverified_exp;

use crate::token_cmd::{self, Mint, StateDirArg};

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

/// How often the progress line is redrawn at most.
const PROGRESS_REDRAW: Duration = Duration::from_millis(100);
/// The `sub` of a token minted for streaming (as `earshot token` defaults to).
const MINTED_SUB: &str = "dev";
/// Longest a `--token-command` may take, seconds: well inside the minute before `exp` at
/// which a refresh starts (`earshot_agent::refresh::MAX_REFRESH_MARGIN`), so a hung command
/// still leaves time for a retry.
const TOKEN_COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

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
    /// Bearer token with scope `ingest` (default: from --token-command, else mint one like
    /// `earshot token --scope ingest --meeting <id>`). A given token is not refreshed: the
    /// server closes the stream at its `exp` unless --token-command is given too.
    #[arg(long, env = "EARSHOT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A shell command that prints a fresh `ingest` token for this meeting on stdout (same
    /// subject each time). Run for the first token when --token is absent, and again before
    /// each token expires, to refresh the live stream.
    #[arg(long, env = "EARSHOT_TOKEN_COMMAND", value_name = "CMD")]
    token_command: Option<String>,
    /// Lifetime of minted tokens, seconds (refreshed by minting again before they expire).
    #[arg(long, default_value_t = earshot_auth::DEFAULT_TOKEN_TTL_S, value_name = "S")]
    token_ttl: u64,
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

/// Why `earshot stream` failed: its own checks, or the agent's.
#[derive(Debug)]
enum Failure {
    Usage(String),
    Input(String),
    Other(String),
    Agent(AgentError),
}

impl Failure {
    fn exit_code(&self) -> u8 {
        match self {
            Failure::Usage(_) => exit::USAGE,
            Failure::Input(_) => exit::BAD_INPUT,
            Failure::Other(_) => exit::ERROR,
            Failure::Agent(e) => agent_exit_code(e),
        }
    }

    fn report(&self) {
        match self {
            Failure::Agent(AgentError::Closed { code, reason, sent }) => {
                println!("closed by server: {code} {reason}");
                eprintln!("earshot stream: had sent {sent} when the server closed the stream{}", close_hint(*code));
            }
            Failure::Agent(e) => eprintln!("earshot stream: {e}"),
            Failure::Usage(m) | Failure::Input(m) | Failure::Other(m) => eprintln!("earshot stream: {m}"),
        }
    }
}

/// The exit code of an agent error.
fn agent_exit_code(e: &AgentError) -> u8 {
    match e {
        AgentError::BadScheme { .. } | AgentError::BadUrl { .. } | AgentError::TokenNotHeaderSafe => exit::USAGE,
        AgentError::Input(_) => exit::BAD_INPUT,
        AgentError::Closed { .. } => exit::CLOSED_BY_SERVER,
        e if e.is_timeout() => exit::TIMEOUT,
        e if e.is_connection() => exit::CONNECTION,
        _ => exit::ERROR,
    }
}

/// An agent error in the words of the flag that caused it, where one did.
fn flag_words(e: AgentError) -> Failure {
    match e {
        AgentError::BadScheme { base } => Failure::Usage(format!("--url {base:?} must start with ws:// (or http://)")),
        AgentError::BadUrl { url, source } => Failure::Usage(format!("bad --url {url}: {source}")),
        e => Failure::Agent(e),
    }
}

/// Runs `earshot stream`; returns the process exit code.
pub(crate) async fn run(args: StreamArgs) -> u8 {
    match stream(args).await {
        Ok(outcome) => {
            println!("{outcome}");
            if outcome.matches() {
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

async fn stream(args: StreamArgs) -> Result<Outcome, Failure> {
    let meeting = MeetingId::parse(&args.meeting)
        .map_err(|_| Failure::Usage(format!("invalid --meeting {:?}: 1-128 characters of [A-Za-z0-9._-]", args.meeting)))?;
    let source = Source::parse(&args.source)
        .map_err(|_| Failure::Usage(format!("invalid --source {:?}: mic, sys or system", args.source)))?;
    let pacing = Pacing::new(args.speed, args.frame_ms).map_err(|e| match e {
        PacingError::Speed(_) => Failure::Usage("--speed must be 0 (as fast as possible) or a positive number".into()),
        PacingError::FrameMs(_) => Failure::Usage(format!("--frame-ms must be 1..={MAX_FRAME_MS}")),
    })?;
    let input = open_input(&args)?;
    let url = earshot_agent::ingest_url(&args.url, &meeting, source).map_err(flag_words)?;
    let mut source = match &args.token_command {
        Some(command) => Some(Refresh::Command(command.clone())),
        None if args.token.is_none() => {
            Some(Refresh::Mint { state_dir: args.state.resolve(), meeting: meeting.to_string(), ttl_s: args.token_ttl })
        }
        None => None,
    };
    let token = match (&args.token, source.as_mut()) {
        (Some(t), _) => t.clone(),
        (None, Some(source)) => source.fresh().await.map_err(|e| Failure::Other(format!("no --token given and {e}")))?,
        (None, None) => unreachable!("without --token there is always a source"),
    };
    let total = input.seconds();
    eprintln!(
        "streaming {} ({} Hz, {} ch{}) to {url}",
        if args.input == "-" { "stdin" } else { &args.input },
        input.format.sample_rate,
        input.format.channels,
        total.map(|s| format!(", {s:.1} s")).unwrap_or_default(),
    );
    let ws = earshot_agent::connect(&url, Some(&token)).await.map_err(flag_words)?;
    let mut session = Session::handshake(ws, input.format).await.map_err(Failure::Agent)?;
    match source {
        Some(source) => {
            if !session.set_token_source(&token, Box::new(source)) {
                eprintln!("earshot stream: the token has no readable exp, so it is never refreshed");
            }
        }
        None => warn_unrefreshed(&token, total),
    }
    let accepted = session.accepted();
    eprintln!("session {}: handshake accepted (max_frame_bytes {})", accepted.session_id, accepted.max_frame_bytes);
    let mut progress = Line::new(std::io::stderr().is_terminal(), total);
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    earshot_agent::stream_input(session, input, pacing, &mut progress, stop).await.map_err(Failure::Agent)
}

/// Where fresher tokens come from.
enum Refresh {
    /// Minted with the local server's secret, like `earshot token`.
    Mint { state_dir: std::path::PathBuf, meeting: String, ttl_s: u64 },
    /// `--token-command`, run with `sh -c`.
    Command(String),
}

impl TokenSource for Refresh {
    fn fresh(&mut self) -> Fresh<'_> {
        match self {
            Refresh::Mint { state_dir, meeting, ttl_s } => {
                let minted = token_cmd::mint(state_dir, Mint { sub: MINTED_SUB, scope: "ingest", meetings: vec![meeting.clone()], ttl_s: *ttl_s })
                    .map_err(|e| format!("minting a token failed: {e:#}"));
                Box::pin(async move { minted })
            }
            Refresh::Command(command) => Box::pin(run_token_command(command.clone())),
        }
    }
}

/// Runs `--token-command`; its trimmed stdout is the token. Its stderr is passed through.
async fn run_token_command(command: String) -> Result<String, String> {
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&command)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .output();
    let output = match tokio::time::timeout(TOKEN_COMMAND_TIMEOUT, child).await {
        Err(_) => return Err(format!("--token-command did not finish within {TOKEN_COMMAND_TIMEOUT:?}")),
        Ok(Err(e)) => return Err(format!("--token-command could not run: {e}")),
        Ok(Ok(output)) => output,
    };
    if !output.status.success() {
        return Err(format!("--token-command failed ({})", output.status));
    }
    let token = String::from_utf8(output.stdout).map_err(|_| "--token-command printed something that is not text".to_owned())?;
    let token = token.trim();
    if token.is_empty() {
        return Err("--token-command printed no token".into());
    }
    Ok(token.to_owned())
}

/// A given token is never refreshed: say so when it will expire before the input ends.
fn warn_unrefreshed(token: &str, total_s: Option<f64>) {
    let Some(exp) = unverified_exp(token) else { return };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let left = exp.saturating_sub(now);
    if total_s.is_none_or(|t| t > left as f64) {
        eprintln!("earshot stream: the token expires in {left} s and is not refreshed (the server closes the stream then); pass --token-command to refresh it");
    }
}

/// Opens the file (must be a WAV) or stdin (a WAV if it starts like one, else raw PCM).
fn open_input(args: &StreamArgs) -> Result<Input, Failure> {
    let name = if args.input == "-" { "stdin" } else { &args.input };
    if args.input != "-" {
        let path = Path::new(&args.input);
        let file = std::fs::File::open(path).map_err(|e| Failure::Input(format!("opening {}: {e}", path.display())))?;
        return Input::wav(std::io::BufReader::new(file)).map_err(|e| Failure::Input(format!("{name}: {e}")));
    }
    let raw = PcmFormat { sample_rate: args.sample_rate, channels: args.channels };
    Input::wav_or_raw(std::io::stdin(), raw).map_err(|e| match e {
        SniffError::Read(e) => Failure::Input(format!("reading stdin: {e}")),
        SniffError::Wav(e) => Failure::Input(format!("{name}: {e}")),
        SniffError::RawFormat(e) => Failure::Usage(format!("raw PCM on stdin: {e}")),
    })
}

/// The progress line on stderr (only on a terminal).
struct Line {
    enabled: bool,
    total_s: Option<f64>,
    last: Option<Instant>,
    drawn: bool,
}

impl Line {
    fn new(enabled: bool, total_s: Option<f64>) -> Self {
        Line { enabled, total_s, last: None, drawn: false }
    }
}

impl earshot_agent::Progress for Line {
    fn update(&mut self, sent_s: f64, sent: Totals, acked: Totals, done: bool) {
        if !self.enabled || (!done && self.last.is_some_and(|t| t.elapsed() < PROGRESS_REDRAW)) {
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

    fn interrupted(&mut self) {
        eprintln!("earshot stream: interrupted, closing the stream");
    }

    fn refreshed(&mut self, exp: u64) {
        self.finish();
        eprintln!("earshot stream: token refreshed (now valid until unix time {exp})");
    }

    fn refresh_failed(&mut self, why: &str) {
        self.finish();
        eprintln!("earshot stream: token refresh failed: {why}; trying again shortly");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_agent_failure_has_the_documented_exit_code() {
        let sent = Totals::default();
        let cases = [
            (AgentError::BadScheme { base: "h".into() }, exit::USAGE),
            (AgentError::TokenNotHeaderSafe, exit::USAGE),
            (AgentError::Closed { code: 1008, reason: "auth failed".into(), sent }, exit::CLOSED_BY_SERVER),
            (AgentError::HandshakeAckTimeout { after: Duration::from_secs(1) }, exit::TIMEOUT),
            (AgentError::CloseFrameTimeout { stored: sent, after: Duration::from_secs(1) }, exit::TIMEOUT),
            (AgentError::Lost("gone".into()), exit::CONNECTION),
            (AgentError::Input(std::io::Error::other("disk")), exit::BAD_INPUT),
            (AgentError::Spawn(std::io::Error::other("no threads")), exit::ERROR),
            (AgentError::FrameLimitTooSmall { max_frame_bytes: 1, block_align: 2 }, exit::ERROR),
        ];
        for (e, code) in cases {
            assert_eq!(Failure::Agent(e).exit_code(), code);
        }
    }
}
