//! The server's settings: one struct, parsed from `earshot up`'s flags (or env) by the
//! CLI and built directly by in-process tests.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Where the public listener binds by default (the app's HTTP routes and WebSockets).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:3000";

/// Where the internal listener binds by default: loopback, the port after the public
/// one, so a laptop's `earshot up` needs no flags and nothing internal is exposed.
pub const DEFAULT_INTERNAL_LISTEN: &str = "127.0.0.1:3001";

/// Settings of one server.
#[derive(clap::Args, Debug, Clone)]
pub struct ServerConfig {
    /// Public address: WebSockets and the app's HTTP routes (port 0 picks a free port;
    /// the startup line tells which).
    #[arg(long, default_value = DEFAULT_LISTEN, env = "EARSHOT_LISTEN")]
    pub listen: SocketAddr,
    /// Internal address: `POST /publish/` (GRIP) and `GET /metrics`. Keep it off the
    /// public network; peers other than loopback need the publish key.
    #[arg(long, default_value = DEFAULT_INTERNAL_LISTEN, env = "EARSHOT_INTERNAL_LISTEN")]
    pub internal_listen: SocketAddr,
    /// Redis URL (e.g. redis://127.0.0.1:6379). Without it Earshot runs on embedded
    /// defaults and health reports "redis":"down".
    #[arg(long, env = "EARSHOT_REDIS")]
    pub redis: Option<String>,
    /// Without `--redis`, do not start a private `redis-server` (even when one is on the
    /// PATH): run without Redis, so audio and transcripts are not stored.
    #[arg(long, env = "EARSHOT_NO_PRIVATE_REDIS")]
    pub no_private_redis: bool,
    /// SQLite file backing the `default` key-value store.
    #[arg(long, default_value = ".earshot/kv.db", env = "EARSHOT_KV_PATH")]
    pub kv_path: PathBuf,
    /// The Spin manifest to run.
    #[arg(long, default_value = "spin.toml", env = "EARSHOT_MANIFEST")]
    pub manifest: PathBuf,
    /// Folder for precompiled components (default: ~/.cache/earshot/components).
    #[arg(long, env = "EARSHOT_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Run each component's `[component.<id>.build]` command first (like `spin up --build`).
    #[arg(long)]
    pub build: bool,
    /// Relay to a remote Spin app at this base URL (e.g. a real `spin up`) instead of
    /// hosting the components in-process.
    #[arg(long, env = "EARSHOT_BACKEND")]
    pub backend: Option<String>,
    /// Key that signs `Grip-Sig` on every backend request (the components verify it
    /// when their `grip_sig_key` variable is set).
    #[arg(long, env = "EARSHOT_GRIP_SIG_KEY")]
    pub grip_sig_key: Option<String>,
    /// Bearer key for the internal endpoints from non-loopback peers (default: admin_key).
    #[arg(long, env = "EARSHOT_PUBLISH_KEY")]
    pub publish_key: Option<String>,
    /// Answer WebSocket-over-HTTP requests (`POST /api/v1/ws/*`, `application/websocket-events`)
    /// on the public port, for a GRIP proxy such as Pushpin in front. Off by default: the
    /// relay calls the components in-process, and nobody else should post events.
    #[arg(long, env = "EARSHOT_PUBLIC_WS_OVER_HTTP")]
    pub public_ws_over_http: bool,
    /// Most WebSockets from one IP address (more are refused with 429).
    #[arg(long, env = "EARSHOT_MAX_CONNECTIONS_PER_IP", default_value_t = earshot_relay::limits::DEFAULT_MAX_CONNECTIONS_PER_IP)]
    pub max_connections_per_ip: usize,
    /// Most WebSockets in total (more are refused with 503).
    #[arg(long, env = "EARSHOT_MAX_CONNECTIONS", default_value_t = earshot_relay::limits::DEFAULT_MAX_CONNECTIONS_TOTAL)]
    pub max_connections: usize,
    /// Component instances running at once; requests beyond it wait in a FIFO queue.
    #[arg(long, env = "EARSHOT_MAX_INSTANCES", default_value_t = earshot_host::instance_pool::DEFAULT_MAX_INSTANCES)]
    pub max_instances: u32,
    /// Longest a request waits for a free instance, in milliseconds; past it the request
    /// fails (HTTP 503, or WebSocket close 1011 `backend busy`).
    #[arg(long, env = "EARSHOT_INSTANCE_QUEUE_TIMEOUT_MS", default_value_t = earshot_host::instance_pool::DEFAULT_QUEUE_TIMEOUT.as_millis() as u64)]
    pub instance_queue_timeout_ms: u64,
    /// Browser origins allowed to open WebSockets besides the same origin (repeatable; `*` = any).
    #[arg(long = "allow-origin", env = "EARSHOT_ALLOW_ORIGINS", value_delimiter = ',')]
    pub allow_origins: Vec<String>,
    /// The public listener's TLS, trusted proxies and HTTP limits.
    #[command(flatten)]
    pub public: crate::public_listener::PublicListenerConfig,
    /// Speech-to-text: the model of the in-process transcription worker.
    #[command(flatten)]
    pub asr: crate::transcription::AsrArgs,
    /// Run no transcription worker in this process (e.g. when `earshot transcribe`
    /// workers run elsewhere).
    #[arg(long, env = "EARSHOT_NO_ASR")]
    pub no_asr: bool,
    /// Application variables set by the embedding program (tests), over the manifest's
    /// defaults and under `SPIN_VARIABLE_*`. Not a flag: the CLI takes variables from
    /// the environment, as Spin does.
    #[arg(skip)]
    pub variables: BTreeMap<String, String>,
}

impl ServerConfig {
    /// Embedded defaults for a server whose state lives in `state_dir`, both listeners
    /// on free loopback ports: what in-process tests start from.
    pub fn for_tests(manifest: impl Into<PathBuf>, state_dir: &std::path::Path) -> Self {
        let any_port: SocketAddr = "127.0.0.1:0".parse().expect("valid address");
        ServerConfig {
            listen: any_port,
            internal_listen: any_port,
            redis: None,
            no_private_redis: true,
            kv_path: state_dir.join("kv.db"),
            manifest: manifest.into(),
            cache_dir: None,
            build: false,
            backend: None,
            grip_sig_key: None,
            publish_key: None,
            public_ws_over_http: false,
            max_connections_per_ip: earshot_relay::limits::DEFAULT_MAX_CONNECTIONS_PER_IP,
            max_connections: earshot_relay::limits::DEFAULT_MAX_CONNECTIONS_TOTAL,
            max_instances: earshot_host::instance_pool::DEFAULT_MAX_INSTANCES,
            instance_queue_timeout_ms: earshot_host::instance_pool::DEFAULT_QUEUE_TIMEOUT.as_millis() as u64,
            allow_origins: Vec::new(),
            public: crate::public_listener::PublicListenerConfig::default(),
            asr: crate::transcription::AsrArgs::default(),
            no_asr: true,
            variables: BTreeMap::new(),
        }
    }
}
