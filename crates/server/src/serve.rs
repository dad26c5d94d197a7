//! Bind, serve, drain: the life of one server.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use earshot_host::{App, HostConfig, HyperOutgoingBody};
use earshot_relay::{HttpBackend, Hub, Relay, RelayConfig};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::config::ServerConfig;
use crate::embedded::Embedded;
use crate::internal::InternalRouter;
use crate::private_redis::PrivateRedis;
use crate::public::PublicRouter;
use crate::public_listener::PublicListener;

/// How long a server waits for in-flight requests after the shutdown signal before it
/// returns anyway. Requests finish in milliseconds; 10 s also covers a slow Redis round
/// trip and stays well inside Kubernetes' default 30 s termination grace period.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// After a failed `accept` (EMFILE and friends), how long the accept loop pauses
/// instead of spinning: long enough for connections to finish and free descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// How often the drain checks whether every WebSocket session has closed.
const DRAIN_POLL: Duration = Duration::from_millis(10);

/// A bound server: both listeners open, the app loaded, nothing served yet.
pub struct Server {
    public: TcpListener,
    internal: TcpListener,
    public_addr: SocketAddr,
    internal_addr: SocketAddr,
    relay: Relay,
    public_listener: Arc<PublicListener>,
    internal_router: Arc<InternalRouter>,
    components: Vec<String>,
    backend_label: String,
    redis_label: Option<String>,
    stop_tx: watch::Sender<bool>,
    /// The in-process transcription worker, when there is Redis and a model.
    worker: Option<crate::transcription::WorkerPlan>,
    asr_stats: crate::transcription::StatsSlot,
    /// The meeting-end sweeper and webhook sender, when there is Redis.
    meetings: Option<earshot_meetings::Sweeper>,
    /// The private Redis (embedded defaults), stopped after the drain.
    private_redis: Option<PrivateRedis>,
}

impl Server {
    /// Binds both listeners, connects Redis and loads the app (or points at the remote
    /// backend). Errors say which step failed.
    pub async fn bind(mut config: ServerConfig) -> anyhow::Result<Server> {
        let private_redis = start_private_redis(&mut config).await?;
        if config.build {
            crate::build_components(&config.manifest)?;
        }
        // Bind first: without Redis, the components publish to this server's own
        // internal `/publish/`, so they must know its address.
        let public = TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
        let internal = TcpListener::bind(config.internal_listen)
            .await
            .with_context(|| format!("binding the internal listener {}", config.internal_listen))?;
        let public_addr = public.local_addr()?;
        let internal_addr = internal.local_addr()?;

        let (stop_tx, stop_rx) = watch::channel(false);
        let hub = match &config.redis {
            Some(url) => Hub::with_redis(url)
                .await
                .with_context(|| format!("connecting the relay to {}", earshot_host::redis_out::redact_url(url)))?,
            None => Hub::local(),
        };

        let (app, backend): (Option<Arc<App>>, Arc<dyn earshot_relay::Backend>) = match &config.backend {
            Some(url) => (None, Arc::new(HttpBackend::new(url))),
            None => {
                let app = Arc::new(load_app(&config, internal_addr).await?);
                app.spawn_redis_triggers();
                (Some(app.clone()), Arc::new(Embedded(app)))
            }
        };
        let publish_key = config
            .publish_key
            .clone()
            .or_else(|| app.as_ref().and_then(|a| a.variable("admin_key")).map(str::to_owned));
        // Embedded, the relay signs with the same key the components verify with (the
        // `grip_sig_key` variable, a generated development key by default).
        let grip_sig_key = config
            .grip_sig_key
            .clone()
            .or_else(|| app.as_ref().and_then(|a| a.variable("grip_sig_key")).filter(|k| !k.is_empty()).map(str::to_owned));
        let relay = Relay::new(
            backend,
            hub,
            RelayConfig {
                grip_sig_key,
                max_connections_per_ip: config.max_connections_per_ip,
                max_connections_total: config.max_connections,
                allowed_origins: config.allow_origins.clone(),
                ..RelayConfig::default()
            },
            stop_rx,
        );
        let public_router = Arc::new(PublicRouter {
            app: app.clone(),
            remote: config.backend.as_deref().map(HttpBackend::new),
            relay: relay.clone(),
            ws_over_http: config.public_ws_over_http,
            max_body_bytes: config.public.max_body_bytes,
        });
        let tls = match (&config.public.tls_cert, &config.public.tls_key) {
            (Some(cert), Some(key)) => Some(Arc::new(crate::tls::Tls::load(cert, key).context("loading --tls-cert/--tls-key")?)),
            (None, None) => None,
            _ => anyhow::bail!("--tls-cert and --tls-key go together"),
        };
        let public_listener = Arc::new(PublicListener::new(
            public_router,
            config.public.limits(),
            crate::client_addr::TrustedProxies::new(config.public.trusted_proxies.clone()),
            tls,
        ));
        let worker = crate::transcription::WorkerPlan::new(&config.asr, config.no_asr, config.redis.as_deref());
        let asr_stats = crate::transcription::StatsSlot::default();
        let meetings = crate::meetings::sweeper(config.redis.as_deref(), app.as_deref()).context("configuring the meeting-end sweeper")?;
        let internal_router = Arc::new(InternalRouter {
            relay: relay.clone(),
            publish_key,
            asr_stats: asr_stats.clone(),
            meeting_stats: meetings.as_ref().map(|s| s.stats()),
        });
        let components = app.as_ref().map(|a| a.summary().into_iter().map(|c| c.id).collect()).unwrap_or_default();
        Ok(Server {
            public,
            internal,
            public_addr,
            internal_addr,
            relay,
            public_listener,
            internal_router,
            components,
            backend_label: config.backend.clone().unwrap_or_else(|| "embedded".into()),
            redis_label: config.redis.as_deref().map(|url| {
                let url = earshot_host::redis_out::redact_url(url);
                if private_redis.is_some() { format!("{url} (private)") } else { url }
            }),
            stop_tx,
            worker,
            asr_stats,
            meetings,
            private_redis,
        })
    }

    /// The public listener's address (WebSockets and the app's routes).
    pub fn public_addr(&self) -> SocketAddr {
        self.public_addr
    }

    /// The internal listener's address (`/publish/`, `/metrics`).
    pub fn internal_addr(&self) -> SocketAddr {
        self.internal_addr
    }

    /// The ids of the components this server hosts (empty with a remote backend).
    pub fn components(&self) -> &[String] {
        &self.components
    }

    /// Serves both listeners until `shutdown` resolves (its value names the cause in
    /// the log), then closes every WebSocket with 1001 and waits for in-flight
    /// requests, at most [`DRAIN_TIMEOUT`].
    pub async fn run(self, shutdown: impl Future<Output = &'static str>) -> anyhow::Result<()> {
        tracing::info!(
            event = "listening",
            address = %self.public_addr,
            internal_address = %self.internal_addr,
            components = %self.components.join(","),
            version = env!("CARGO_PKG_VERSION"),
            backend = %self.backend_label,
            redis = self.redis_label.as_deref(),
            tls = self.public_listener.tls.is_some(),
            trusted_proxies = %self.public_listener.trusted.describe(),
            "earshot listening"
        );
        // Every connection task holds a clone of `drain_tx`; when the last one
        // finishes, `drain_rx` yields None and the drain is complete.
        let (drain_tx, mut drain_rx) = mpsc::channel::<()>(1);
        let stop_rx = self.stop_tx.subscribe();
        if let Some(tls) = &self.public_listener.tls {
            tokio::spawn(tls.clone().watch(stop_rx.clone()));
        }
        let public = tokio::spawn(self.public_listener.clone().accept_loop(self.public, stop_rx.clone(), drain_tx.clone()));
        let internal_router = self.internal_router.clone();
        let internal = tokio::spawn(accept_loop(self.internal, stop_rx, drain_tx.clone(), move |req, peer| {
            let router = internal_router.clone();
            async move { router.handle(req, peer).await }
        }));
        drop(drain_tx);
        let worker = self.worker.map(|plan| {
            let mut stop = self.stop_tx.subscribe();
            tokio::spawn(plan.run(self.asr_stats.clone(), async move {
                let _ = stop.wait_for(|s| *s).await;
            }))
        });

        let meetings = self.meetings.map(|sweeper| {
            let mut stop = self.stop_tx.subscribe();
            tokio::spawn(sweeper.run(async move {
                let _ = stop.wait_for(|s| *s).await;
            }))
        });

        let signal = shutdown.await;
        tracing::info!(event = "shutdown", signal, "draining");
        // WebSocket sessions close with 1001; HTTP connections finish their request.
        let _ = self.stop_tx.send(true);
        // The accept loops end on the stop signal, dropping their listeners.
        let _ = tokio::join!(public, internal);
        let relay = self.relay;
        let drained = async {
            let _ = drain_rx.recv().await;
            while relay.open_sessions() > 0 {
                tokio::time::sleep(DRAIN_POLL).await;
            }
        };
        tokio::select! {
            _ = drained => tracing::info!(event = "drained", "all connections closed"),
            _ = tokio::time::sleep(DRAIN_TIMEOUT) => tracing::warn!(
                event = "drain_timeout",
                open_sessions = relay.open_sessions(),
                "connections still open after the drain timeout"
            ),
        }
        if let Some(worker) = worker {
            // It releases its leases (positions stay committed) before Redis goes away.
            match worker.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = format!("{e:#}"), "transcription worker ended with an error"),
                Err(e) => tracing::warn!(error = %e, "transcription worker panicked"),
            }
        }
        if let Some(meetings) = meetings {
            match meetings.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = format!("{e:#}"), "meeting-end sweeper ended with an error"),
                Err(e) => tracing::warn!(error = %e, "meeting-end sweeper panicked"),
            }
        }
        drop(self.private_redis);
        Ok(())
    }
}

/// The next connection on `listener`, or `None` once `stop` turns true. A failed
/// `accept` (EMFILE and friends) is logged and retried after ACCEPT_BACKOFF. Both
/// listeners' accept loops go through here.
pub(crate) async fn accept_until_stopped(
    listener: &TcpListener,
    stop: &mut watch::Receiver<bool>,
) -> Option<(tokio::net::TcpStream, SocketAddr)> {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            // The guard `wait_for` returns is not Send: drop it inside.
            _ = async { let _ = stop.wait_for(|s| *s).await; } => return None,
        };
        match accepted {
            Ok(a) => return Some(a),
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Accepts connections on `listener` until `stop` turns true, serving each with
/// `handle` on its own task (which holds `drain` until the connection is done).
async fn accept_loop<H, F>(listener: TcpListener, mut stop: watch::Receiver<bool>, drain: mpsc::Sender<()>, handle: H)
where
    H: Fn(http::Request<hyper::body::Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = http::Response<HyperOutgoingBody>> + Send + 'static,
{
    while let Some((stream, peer)) = accept_until_stopped(&listener, &mut stop).await {
        let handle = handle.clone();
        let service = service_fn(move |req| {
            let response = handle(req, peer);
            async move { Ok::<_, std::convert::Infallible>(response.await) }
        });
        let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service).with_upgrades();
        let drain = drain.clone();
        let mut stop = stop.clone();
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
}

/// Embedded defaults without `--redis`: a private `redis-server` child when one is on
/// the PATH (the startup line says so), else a plain warning that nothing is stored.
async fn start_private_redis(config: &mut ServerConfig) -> anyhow::Result<Option<PrivateRedis>> {
    if config.redis.is_some() || config.backend.is_some() || config.no_private_redis {
        return Ok(None);
    }
    if !PrivateRedis::available() {
        tracing::warn!(
            event = "no_redis",
            "no Redis: live events only, audio and transcripts are not stored (install redis-server, or pass --redis <url>)"
        );
        return Ok(None);
    }
    let state_dir = config.kv_path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let redis = PrivateRedis::start(state_dir).await.context("starting the private Redis (or pass --redis / --no-private-redis)")?;
    config.redis = Some(redis.url().to_owned());
    Ok(Some(redis))
}

async fn load_app(config: &ServerConfig, internal_addr: SocketAddr) -> anyhow::Result<App> {
    let mut overrides = BTreeMap::new();
    let state_dir = config.kv_path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    crate::secrets::dev_defaults(&config.manifest, state_dir, &mut overrides)?;
    // What the embedding program set explicitly wins over generated development values.
    overrides.extend(config.variables.clone());
    if config.redis.is_none()
        && !overrides.contains_key("grip_publish_url")
        && std::env::var(earshot_host::variables::env_name("grip_publish_url")).is_err()
    {
        // No Redis to fan out through: components publish to this server's internal listener.
        overrides.insert("grip_publish_url".into(), format!("http://{internal_addr}/publish/"));
    }
    let kv = Arc::new(
        earshot_host::kv::SqliteKv::open(&config.kv_path)
            .with_context(|| format!("opening key-value store {}", config.kv_path.display()))?,
    );
    let host = HostConfig {
        kv_path: config.kv_path.clone(),
        redis_url: config.redis.clone(),
        variable_overrides: overrides,
        cache_dir: config.cache_dir.clone().or_else(earshot_host::cache::default_cache_dir),
        instances: earshot_host::InstancePoolConfig {
            max_instances: config.max_instances,
            queue_timeout: std::time::Duration::from_millis(config.instance_queue_timeout_ms),
            ..Default::default()
        },
    };
    App::load(&config.manifest, host, kv)
        .await
        .with_context(|| format!("loading {}", config.manifest.display()))
}
