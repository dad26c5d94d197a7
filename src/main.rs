//! `earshot`: runs the Earshot Spin application on the embedded host.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod demo_wav;
mod stream;
mod token_cmd;
mod transcribe;

#[derive(Parser)]
#[command(name = "earshot", version, about = "Live meeting audio in, live transcripts out.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the Spin application (spin.toml) on the embedded wasmtime host.
    Up(earshot_server::ServerConfig),
    /// Run a transcription worker on its own (speech-to-text for every stream in Redis).
    Transcribe(transcribe::TranscribeArgs),
    /// Mint a development token with the local server's secret (printed alone on stdout).
    Token(token_cmd::TokenArgs),
    /// Stream a WAV file (or PCM on stdin) to a meeting, like a capture agent.
    Stream(stream::StreamArgs),
    /// Write a 16 kHz mono test WAV (tone, silence, tone).
    DemoWav(demo_wav::DemoWavArgs),
}

/// Logs of the client commands: human-readable on stderr, so stdout carries only the
/// command's output (`T=$(earshot token)`).
fn init_cli_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("EARSHOT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("EARSHOT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .init();
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    if let Command::Up(_) | Command::Transcribe(_) = cli.command {
        init_logging();
    } else {
        init_cli_logging();
    }
    match cli.command {
        Command::Up(args) => up(args).await.map(|()| ExitCode::SUCCESS),
        Command::Transcribe(args) => transcribe::run(args, shutdown_signal()).await.map(|()| ExitCode::SUCCESS),
        Command::Token(args) => Ok(cli_outcome("token", token_cmd::run(args))),
        Command::Stream(args) => Ok(ExitCode::from(stream::run(args).await)),
        Command::DemoWav(args) => Ok(cli_outcome("demo-wav", demo_wav::run(args))),
    }
}

/// A client command's error as one line on stderr (no backtrace), exit code 1.
fn cli_outcome(command: &str, result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("earshot {command}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `earshot up`: bind, serve until SIGTERM/Ctrl-C, drain.
async fn up(config: earshot_server::ServerConfig) -> anyhow::Result<()> {
    let server = earshot_server::Server::bind(config).await?;
    server.run(shutdown_signal()).await
}

/// Resolves on SIGTERM or Ctrl-C, naming which.
async fn shutdown_signal() -> &'static str {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
    }
}
