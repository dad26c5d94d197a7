//! `earshot`: runs the Earshot Spin application on the embedded host.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use earshot_host::{App, HostConfig};
use earshot_relay::{HttpBackend, Hub, Relay, RelayConfig};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

mod backend;
mod metrics;
mod demo_wav;
mod secrets;
mod serve;
mod stream;
mod token_cmd;

/// How long `earshot up` waits for in-flight requests after SIGTERM before it exits
/// anyway. Requests finish in milliseconds; 10 s also covers a slow Redis round trip
/// and stays well inside Kubernetes' default 30 s termination grace period.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Parser)]
#[command(name = "earshot", version, about = "Live meeting audio in, live transcripts out.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the Spin application (spin.toml) on the embedded wasmtime host.
    Up(UpArgs),
    /// Mint a development token with the local server's secret (printed alone on stdout).
    Token(token_cmd::TokenArgs),
    /// Stream a WAV file (or PCM on stdin) to a meeting, like a capture agent.
    Stream(stream::StreamArgs),
    /// Write a 16 kHz mono test WAV (tone, silence, tone).
    DemoWav(demo_wav::DemoWavArgs),
}

#[derive(clap::Args)]
struct UpArgs {
    /// Address to listen on (port 0 picks a free port; the startup line tells which).
    #[arg(long, default_value = "127.0.0.1:3000", env = "EARSHOT_LISTEN")]
    listen: SocketAddr,
    /// Redis URL (e.g. redis://127.0.0.1:6379). Without it Earshot runs on embedded
    /// defaults and health reports "redis":"down".
    #[arg(long, env = "EARSHOT_REDIS")]
    redis: Option<String>,
    /// SQLite file backing the `default` key-value store.
    #[arg(long, default_value = ".earshot/kv.db", env = "EARSHOT_KV_PATH")]
    kv_path: PathBuf,
    /// The Spin manifest to run.
    #[arg(long, default_value = "spin.toml", env = "EARSHOT_MANIFEST")]
    manifest: PathBuf,
    /// Folder for precompiled components (default: ~/.cache/earshot/components).
    #[arg(long, env = "EARSHOT_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Run each component's `[component.<id>.build]` command first (like `spin up --build`).
    #[arg(long)]
    build: bool,
    /// Relay to a remote Spin app at this base URL (e.g. a real `spin up`) instead of
    /// hosting the components in-process.
    #[arg(long, env = "EARSHOT_BACKEND")]
    backend: Option<String>,
    /// Key that signs `Grip-Sig` on every backend request (the components verify it
    /// when their `grip_sig_key` variable is set).
    #[arg(long, env = "EARSHOT_GRIP_SIG_KEY")]
    grip_sig_key: Option<String>,
    /// Bearer key for `POST /publish/` from non-loopback peers (default: admin_key).
    #[arg(long, env = "EARSHOT_PUBLISH_KEY")]
    publish_key: Option<String>,
    /// Most WebSockets from one IP address (more are refused with 429).
    #[arg(long, env = "EARSHOT_MAX_CONNECTIONS_PER_IP", default_value_t = earshot_relay::limits::DEFAULT_MAX_CONNECTIONS_PER_IP)]
    max_connections_per_ip: usize,
    /// Most WebSockets in total (more are refused with 503).
    #[arg(long, env = "EARSHOT_MAX_CONNECTIONS", default_value_t = earshot_relay::limits::DEFAULT_MAX_CONNECTIONS_TOTAL)]
    max_connections: usize,
    /// Browser origins allowed to open WebSockets besides the same origin (repeatable; `*` = any).
    #[arg(long = "allow-origin", env = "EARSHOT_ALLOW_ORIGINS", value_delimiter = ',')]
    allow_origins: Vec<String>,
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
    if let Command::Up(_) = cli.command {
        init_logging();
    } else {
        init_cli_logging();
    }
    match cli.command {
        Command::Up(args) => up(args).await.map(|()| ExitCode::SUCCESS),
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

async fn up(args: UpArgs) -> anyhow::Result<()> {
    if args.build {
        build_components(&args.manifest)?;
    }
    // Bind first: without Redis, the components publish to this relay's own
    // `/publish/`, so they must know its address.
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let address = listener.local_addr()?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let hub = match &args.redis {
        Some(url) => Hub::with_redis(url)
            .await
            .with_context(|| format!("connecting the relay to {}", earshot_host::redis_out::redact_url(url)))?,
        None => Hub::local(),
    };

    let (app, backend): (Option<Arc<App>>, Arc<dyn earshot_relay::Backend>) = match &args.backend {
        Some(url) => (None, Arc::new(HttpBackend::new(url))),
        None => {
            let app = Arc::new(load_app(&args, address).await?);
            app.spawn_redis_triggers();
            (Some(app.clone()), Arc::new(backend::Embedded(app)))
        }
    };
    let publish_key = args
        .publish_key
        .clone()
        .or_else(|| app.as_ref().and_then(|a| a.variable("admin_key")).map(str::to_owned));
    // Embedded, the relay signs with the same key the components verify with (the
    // `grip_sig_key` variable, a generated development key by default).
    let grip_sig_key = args
        .grip_sig_key
        .clone()
        .or_else(|| app.as_ref().and_then(|a| a.variable("grip_sig_key")).filter(|k| !k.is_empty()).map(str::to_owned));
    let relay = Relay::new(
        backend.clone(),
        hub,
        RelayConfig {
            grip_sig_key,
            max_connections_per_ip: args.max_connections_per_ip,
            max_connections_total: args.max_connections,
            allowed_origins: args.allow_origins.clone(),
            ..RelayConfig::default()
        },
        stop_rx.clone(),
    );
    let router = Arc::new(serve::Router { app: app.clone(), remote: args.backend.as_deref().map(HttpBackend::new), relay: relay.clone(), publish_key });

    let components: Vec<String> = app.as_ref().map(|a| a.summary().into_iter().map(|c| c.id).collect()).unwrap_or_default();
    tracing::info!(
        event = "listening",
        address = %address,
        components = %components.join(","),
        version = env!("CARGO_PKG_VERSION"),
        backend = args.backend.as_deref().unwrap_or("embedded"),
        redis = args.redis.as_deref().map(earshot_host::redis_out::redact_url).as_deref(),
        "earshot listening"
    );

    // Every connection task holds a clone of `drain_tx`; when the last one finishes,
    // `drain_rx` yields None and the drain is complete.
    let (drain_tx, mut drain_rx) = tokio::sync::mpsc::channel::<()>(1);
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: back off briefly instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let router = router.clone();
                let service = service_fn(move |req| {
                    let router = router.clone();
                    async move { Ok::<_, std::convert::Infallible>(router.handle(req, peer).await) }
                });
                let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service).with_upgrades();
                let drain = drain_tx.clone();
                let mut stop = stop_rx.clone();
                tokio::spawn(async move {
                    tokio::pin!(conn);
                    let result = tokio::select! {
                        r = conn.as_mut() => r,
                        _ = async { let _ = stop.wait_for(|s| *s).await; } => {
                            conn.as_mut().graceful_shutdown();
                            conn.await
                        }
                    };
                    if let Err(e) = result {
                        tracing::debug!(error = %e, peer = %peer, "connection ended with an error");
                    }
                    drop(drain);
                });
            }
            signal = &mut shutdown => {
                tracing::info!(event = "shutdown", signal, "draining");
                break;
            }
        }
    }
    drop(listener);
    // WebSocket sessions close with 1001; HTTP connections finish their request.
    let _ = stop_tx.send(true);
    drop(drain_tx);
    let drained = async {
        let _ = drain_rx.recv().await;
        while relay.open_sessions() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::select! {
        _ = drained => tracing::info!(event = "drained", "all connections closed"),
        _ = tokio::time::sleep(DRAIN_TIMEOUT) => tracing::warn!(event = "drain_timeout", open_sessions = relay.open_sessions(), "connections still open after the drain timeout"),
    }
    Ok(())
}

async fn load_app(args: &UpArgs, address: SocketAddr) -> anyhow::Result<App> {
    let mut overrides = BTreeMap::new();
    let state_dir = args.kv_path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    secrets::dev_defaults(&args.manifest, state_dir, &mut overrides)?;
    if args.redis.is_none() && std::env::var(earshot_host::variables::env_name("grip_publish_url")).is_err() {
        // No Redis to fan out through: components publish to this relay directly.
        overrides.insert("grip_publish_url".into(), format!("http://{address}/publish/"));
    }
    let kv = Arc::new(
        earshot_host::kv::SqliteKv::open(&args.kv_path)
            .with_context(|| format!("opening key-value store {}", args.kv_path.display()))?,
    );
    let config = HostConfig {
        kv_path: args.kv_path.clone(),
        redis_url: args.redis.clone(),
        variable_overrides: overrides,
        cache_dir: args.cache_dir.clone().or_else(earshot_host::cache::default_cache_dir),
    };
    App::load(&args.manifest, config, kv)
        .await
        .with_context(|| format!("loading {}", args.manifest.display()))
}

/// Runs every distinct build command of the manifest, as `spin build` does.
fn build_components(manifest_path: &Path) -> anyhow::Result<()> {
    let manifest = earshot_host::manifest::Manifest::load(manifest_path)?;
    let mut done = Vec::new();
    for (id, c) in &manifest.components {
        let Some(build) = &c.build else { continue };
        let dir = manifest.base_dir.join(build.workdir.as_deref().unwrap_or("."));
        if done.contains(&(build.command.clone(), dir.clone())) {
            continue;
        }
        tracing::info!(event = "build", component = %id, command = %build.command, "building component");
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(&build.command)
            .current_dir(&dir)
            // A host build's target dir must not capture the wasm build's output,
            // which spin.toml expects under components/target.
            .env_remove("CARGO_TARGET_DIR")
            .stdout(std::process::Stdio::from(std::io::stderr()))
            .status()
            .with_context(|| format!("running the build of component `{id}`"))?;
        anyhow::ensure!(status.success(), "the build of component `{id}` failed ({status})");
        done.push((build.command.clone(), dir));
    }
    Ok(())
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
