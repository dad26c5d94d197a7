//! The loaded application: one engine, every component compiled once and
//! pre-instantiated, HTTP requests routed to fresh instances, Redis triggers fed.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{Engine, Store, StoreLimitsBuilder};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpView};

use crate::bindings::redis_trigger::RedisTriggerPre;
use crate::bindings::SpinImports;
use crate::cache::compile_cached;
use crate::guest_log::forward_guest_output;
use crate::kv::{KeyValueBackend, KvGrants};
use crate::manifest::Manifest;
use crate::outbound::AllowedHosts;
use crate::redis_out::{redact_url, RedisPool};
use crate::routes::Router;
use crate::state::{ComponentRuntime, HostState, Shared};
use crate::variables::Variables;

/// Most component instances alive at once. Each request or Redis message holds one
/// for microseconds to a few milliseconds; 256 covers bursts of requests parked on
/// Redis round trips on a 2-core machine, and bounds the pooling allocator's
/// up-front address-space reservation.
pub const MAX_CONCURRENT_INSTANCES: u32 = 256;

/// Linear memory one instance may grow to, in bytes. Earshot's components need a
/// few MiB (a 64 KiB PCM frame, a JSON body); 64 MiB leaves room without letting
/// one request eat the machine.
pub(crate) const MAX_INSTANCE_MEMORY_BYTES: usize = 64 << 20;

/// Wall-clock budget of one guest call. Components answer in milliseconds; a guest
/// stuck in a loop is trapped after this instead of holding an instance forever.
pub const GUEST_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Epoch tick: the granularity at which runaway guests are interrupted.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// How much a guest may print per call, in bytes; beyond it output is dropped, so a
/// chatty guest cannot grow the relay's memory.
pub(crate) const GUEST_OUTPUT_LIMIT_BYTES: usize = 64 << 10;

/// Backoff bounds for re-subscribing a Redis trigger after its connection fails.
const REDIS_TRIGGER_BACKOFF_MIN: Duration = Duration::from_millis(100);
const REDIS_TRIGGER_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Settings of the embedded host that are not part of `spin.toml` (Spin keeps these
/// in its runtime config and CLI flags).
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// SQLite file backing the `default` key-value store.
    pub kv_path: PathBuf,
    /// Redis URL: sets the `redis_url` variable and the Redis-trigger address.
    pub redis_url: Option<String>,
    /// Variable values that win over `SPIN_VARIABLE_*` and defaults.
    pub variable_overrides: BTreeMap<String, String>,
    /// Where precompiled components are cached (keyed by the .wasm's hash).
    pub cache_dir: Option<PathBuf>,
}

struct LoadedComponent {
    runtime: Arc<ComponentRuntime>,
    http: Option<ProxyPre<HostState>>,
    redis: Option<RedisTriggerPre<HostState>>,
}

/// A running Spin application hosted in-process.
pub struct App {
    engine: Engine,
    manifest: Manifest,
    router: Router,
    components: HashMap<String, LoadedComponent>,
    shared: Arc<Shared>,
    redis_trigger_address: Option<String>,
    variables: Variables,
}

/// One line describing a loaded component, for the startup log.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ComponentSummary {
    /// Component id.
    pub id: String,
    /// HTTP routes it serves.
    pub routes: Vec<String>,
    /// Redis channels it handles.
    pub channels: Vec<String>,
}

fn engine() -> anyhow::Result<Engine> {
    let mut config = wasmtime::Config::new();
    config.epoch_interruption(true);
    let mut pool = wasmtime::PoolingAllocationConfig::default();
    pool.total_component_instances(MAX_CONCURRENT_INSTANCES);
    // A wasm32-wasip2 component holds a handful of core instances (the module, the
    // adapter shims); 16 each is generous.
    pool.max_core_instances_per_component(16);
    pool.total_core_instances(MAX_CONCURRENT_INSTANCES * 8);
    pool.max_memories_per_component(4);
    pool.total_memories(MAX_CONCURRENT_INSTANCES * 2);
    pool.max_tables_per_component(8);
    pool.total_tables(MAX_CONCURRENT_INSTANCES * 8);
    pool.max_memory_size(MAX_INSTANCE_MEMORY_BYTES);
    config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    // Reserve only what an instance may use: the default 4 GiB per memory times the
    // pool size would exhaust a container's address-space limit.
    config.memory_reservation(MAX_INSTANCE_MEMORY_BYTES as u64);
    config.memory_guard_size(64 << 10);
    Engine::new(&config).map_err(|e| anyhow!("{e}")).context("creating the wasmtime engine")
}

impl App {
    /// Loads `spin.toml`, compiles every component and checks its imports.
    pub async fn load(manifest_path: &Path, config: HostConfig, kv: Arc<dyn KeyValueBackend>) -> anyhow::Result<Self> {
        let manifest = Manifest::load(manifest_path)?;
        let mut overrides = config.variable_overrides.clone();
        if let Some(url) = &config.redis_url {
            if manifest.variables.contains_key("redis_url") {
                overrides.entry("redis_url".into()).or_insert_with(|| url.clone());
            }
        }
        let variables = Variables::resolve(&manifest, &overrides, |k| std::env::var(k).ok())?;
        let kv_labels = vec!["default".to_owned()];
        let shared = Arc::new(Shared { kv, kv_labels: kv_labels.clone(), redis: RedisPool::default() });
        let engine = engine()?;
        spawn_epoch_ticker(&engine);

        let mut linker: Linker<HostState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| anyhow!("{e}"))?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(|e| anyhow!("{e}"))?;
        SpinImports::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(|e| anyhow!("{e}"))?;

        let mut components = HashMap::new();
        for (id, def) in &manifest.components {
            for label in &def.key_value_stores {
                if !kv_labels.contains(label) {
                    bail!("component `{id}` uses key-value store `{label}`, which this host does not define (defined: {kv_labels:?})");
                }
            }
            let rendered_hosts = def
                .allowed_outbound_hosts
                .iter()
                .map(|h| variables.render(h))
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("component `{id}`: allowed_outbound_hosts"))?;
            let allowed_hosts = AllowedHosts::parse(&rendered_hosts)
                .map_err(|e| anyhow!("component `{id}`: allowed_outbound_hosts: {e}"))?;
            let component_vars = variables
                .for_component(&def.variables)
                .with_context(|| format!("component `{id}`: variables"))?;
            let runtime = Arc::new(ComponentRuntime {
                id: id.clone(),
                kv_grants: KvGrants::new(def.key_value_stores.clone()),
                allowed_hosts,
                variables: component_vars,
            });
            let started = Instant::now();
            let component = compile_cached(&engine, &def.source, config.cache_dir.as_deref())
                .with_context(|| format!("component `{id}`: loading {}", def.source.display()))?;
            let pre = linker
                .instantiate_pre(&component)
                .map_err(|e| anyhow!("{e}"))
                .with_context(|| format!("component `{id}` imports an interface this host does not provide"))?;
            let serves_http = manifest.http_triggers.iter().any(|t| &t.component == id);
            let serves_redis = manifest.redis_triggers.iter().any(|t| &t.component == id);
            let http = if serves_http {
                Some(
                    ProxyPre::new(pre.clone())
                        .map_err(|e| anyhow!("{e}"))
                        .with_context(|| format!("component `{id}` is on an HTTP route but does not export wasi:http/incoming-handler@0.2.x"))?,
                )
            } else {
                None
            };
            let redis = if serves_redis {
                Some(
                    RedisTriggerPre::new(pre)
                        .map_err(|e| anyhow!("{e}"))
                        .with_context(|| format!("component `{id}` is on a Redis trigger but does not export fermyon:spin/inbound-redis"))?,
                )
            } else {
                None
            };
            tracing::debug!(component = %id, elapsed_ms = started.elapsed().as_millis() as u64, "component loaded");
            components.insert(id.clone(), LoadedComponent { runtime, http, redis });
        }
        let router = Router::new(manifest.http_triggers.iter().map(|t| (t.route.as_str(), t.component.as_str())));
        // One Redis for everything in embedded mode: `--redis` or the `redis_url`
        // variable. The manifest's `[application.trigger.redis] address` is what
        // `spin up` uses; falling back to it here would subscribe to whatever Redis
        // happens to listen there while the components run without one.
        let redis_trigger_address = config
            .redis_url
            .clone()
            .or_else(|| variables.get("redis_url").filter(|u| !u.is_empty()).map(str::to_owned));
        Ok(App { engine, manifest, router, components, shared, redis_trigger_address, variables })
    }

    /// The resolved value of application variable `name`.
    pub fn variable(&self, name: &str) -> Option<&str> {
        self.variables.get(name)
    }

    /// The manifest this app was loaded from.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// What was loaded, for the startup line.
    pub fn summary(&self) -> Vec<ComponentSummary> {
        self.manifest
            .components
            .keys()
            .map(|id| ComponentSummary {
                id: id.clone(),
                routes: self.manifest.http_triggers.iter().filter(|t| &t.component == id).map(|t| t.route.clone()).collect(),
                channels: self.manifest.redis_triggers.iter().filter(|t| &t.component == id).map(|t| t.channel.clone()).collect(),
            })
            .collect()
    }

    fn new_store(&self, runtime: &Arc<ComponentRuntime>) -> Store<HostState> {
        let stdout = MemoryOutputPipe::new(GUEST_OUTPUT_LIMIT_BYTES);
        let stderr = MemoryOutputPipe::new(GUEST_OUTPUT_LIMIT_BYTES);
        let wasi = WasiCtx::builder().stdout(stdout.clone()).stderr(stderr.clone()).build();
        let state = HostState {
            wasi,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new().memory_size(MAX_INSTANCE_MEMORY_BYTES).instances(32).build(),
            hooks: crate::outbound_http::OutboundHttpHooks { allowed: Arc::new(runtime.allowed_hosts.clone()) },
            component: runtime.clone(),
            shared: self.shared.clone(),
            stdout,
            stderr,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline((GUEST_CALL_TIMEOUT.as_millis() / EPOCH_TICK.as_millis()) as u64);
        store.epoch_deadline_trap();
        store
    }

    /// Serves one HTTP request through the component its route names. Answers 404
    /// when no route matches and 500 when the guest fails.
    pub async fn handle_http<B>(
        &self,
        req: http::Request<B>,
        client_addr: Option<SocketAddr>,
    ) -> http::Response<HyperOutgoingBody>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let path = req.uri().path().to_owned();
        let Some(matched) = self.router.route(&path) else {
            return plain(http::StatusCode::NOT_FOUND, "not found\n");
        };
        let Some(component) = self.components.get(matched.component) else {
            return plain(http::StatusCode::NOT_FOUND, "not found\n");
        };
        let Some(pre) = component.http.clone() else {
            return plain(http::StatusCode::NOT_FOUND, "not found\n");
        };
        let id = component.runtime.id.clone();
        let req = with_spin_headers(req, &matched, client_addr);
        match self.call_http(pre, &component.runtime, req).await {
            Ok(resp) => resp,
            Err(e) => {
                tracing::error!(component = %id, error = format!("{e:#}"), "component failed");
                plain(http::StatusCode::INTERNAL_SERVER_ERROR, "component failed\n")
            }
        }
    }

    async fn call_http<B>(
        &self,
        pre: ProxyPre<HostState>,
        runtime: &Arc<ComponentRuntime>,
        req: http::Request<B>,
    ) -> anyhow::Result<http::Response<HyperOutgoingBody>>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let mut store = self.new_store(runtime);
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let req = store.data_mut().http().new_incoming_request(Scheme::Http, req).map_err(|e| anyhow!("{e}"))?;
        let out = store.data_mut().http().new_response_outparam(sender).map_err(|e| anyhow!("{e}"))?;
        let id = runtime.id.clone();
        // The guest runs in its own task so it may keep streaming the body after the
        // head is sent; its output is forwarded to the log when it finishes.
        let task = tokio::spawn(async move {
            let result = async {
                let proxy = pre.instantiate_async(&mut store).await?;
                proxy.wasi_http_incoming_handler().call_handle(&mut store, req, out).await
            }
            .await;
            let state = store.data();
            forward_guest_output(&id, &state.stdout, &state.stderr);
            result.map_err(|e| anyhow!("{e:?}"))
        });
        match receiver.await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(code)) => Err(anyhow!("guest answered with an error code: {code:?}")),
            Err(_) => match task.await {
                Ok(Ok(())) => Err(anyhow!("guest never set a response")),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(anyhow!("guest task failed: {e}")),
            },
        }
    }

    /// Delivers one Redis message to a Redis-trigger component.
    pub async fn handle_redis_message(&self, component_id: &str, payload: Vec<u8>) -> anyhow::Result<()> {
        let component = self
            .components
            .get(component_id)
            .ok_or_else(|| anyhow!("no component `{component_id}`"))?;
        let pre = component.redis.clone().ok_or_else(|| anyhow!("`{component_id}` is not a Redis component"))?;
        let mut store = self.new_store(&component.runtime);
        let result = async {
            let instance = pre.instantiate_async(&mut store).await?;
            instance.fermyon_spin_inbound_redis().call_handle_message(&mut store, &payload).await
        }
        .await;
        let state = store.data();
        forward_guest_output(component_id, &state.stdout, &state.stderr);
        match result.map_err(|e| anyhow!("{e:?}"))? {
            Ok(()) => Ok(()),
            Err(e) => bail!("component `{component_id}` rejected the message: {e:?}"),
        }
    }

    /// Subscribes every Redis trigger and feeds it until the app is dropped. Without
    /// a Redis address the triggers stay idle (the embedded default runs without Redis).
    pub fn spawn_redis_triggers(self: &Arc<Self>) {
        let Some(default_address) = self.redis_trigger_address.clone() else {
            if !self.manifest.redis_triggers.is_empty() {
                tracing::info!("no Redis configured: Redis triggers are idle");
            }
            return;
        };
        for trigger in &self.manifest.redis_triggers {
            let address = trigger.address.clone().unwrap_or_else(|| default_address.clone());
            let app = Arc::downgrade(self);
            let channel = trigger.channel.clone();
            let component = trigger.component.clone();
            tokio::spawn(async move {
                let mut backoff = REDIS_TRIGGER_BACKOFF_MIN;
                loop {
                    match subscribe(&address, &channel).await {
                        Ok(mut pubsub) => {
                            tracing::info!(channel = %channel, component = %component, redis = %redact_url(&address), "redis trigger subscribed");
                            backoff = REDIS_TRIGGER_BACKOFF_MIN;
                            let mut messages = pubsub.on_message();
                            while let Some(msg) = messages.next().await {
                                let Some(app) = app.upgrade() else { return };
                                let payload: Vec<u8> = msg.get_payload_bytes().to_vec();
                                // Messages are handled one at a time per channel, in order: a
                                // transcript stream must keep the order its worker published.
                                if let Err(e) = app.handle_redis_message(&component, payload).await {
                                    tracing::warn!(channel = %channel, component = %component, error = format!("{e:#}"), "redis message not handled");
                                }
                            }
                            tracing::warn!(channel = %channel, "redis trigger connection closed; resubscribing");
                        }
                        Err(e) => {
                            tracing::warn!(channel = %channel, redis = %redact_url(&address), error = %e, "redis trigger cannot subscribe; retrying");
                        }
                    }
                    if app.strong_count() == 0 {
                        return;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(REDIS_TRIGGER_BACKOFF_MAX);
                }
            });
        }
    }
}

async fn subscribe(address: &str, channel: &str) -> redis::RedisResult<redis::aio::PubSub> {
    let client = redis::Client::open(address)?;
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
}

fn spawn_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("earshot-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawning the epoch thread");
}

/// Adds the headers Spin gives HTTP components (`spin-full-url`, `spin-path-info`…),
/// after removing any a client sent, so a guest can trust them.
fn with_spin_headers<B>(
    mut req: http::Request<B>,
    matched: &crate::routes::RouteMatch<'_>,
    client_addr: Option<SocketAddr>,
) -> http::Request<B> {
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost")
        .to_owned();
    let full_url = format!("http://{host}{}", req.uri().path_and_query().map_or("/", |p| p.as_str()));
    let headers = req.headers_mut();
    let names = [
        "spin-full-url",
        "spin-path-info",
        "spin-matched-route",
        "spin-component-route",
        "spin-raw-component-route",
        "spin-base-path",
        "spin-client-addr",
    ];
    for n in names {
        headers.remove(n);
    }
    let mut set = |name: &'static str, value: &str| {
        if let Ok(v) = http::HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    set("spin-full-url", &full_url);
    set("spin-path-info", &matched.path_info);
    set("spin-matched-route", matched.pattern);
    set("spin-component-route", matched.base);
    set("spin-raw-component-route", matched.pattern);
    set("spin-base-path", "/");
    if let Some(addr) = client_addr {
        set("spin-client-addr", &addr.to_string());
    }
    req
}

/// A small text response produced by the host itself.
pub fn plain(status: http::StatusCode, text: &'static str) -> http::Response<HyperOutgoingBody> {
    let body = Full::new(Bytes::from_static(text.as_bytes()))
        .map_err(|never| match never {})
        .boxed_unsync();
    http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(body)
        .expect("static response parts are valid")
}
