//! The loaded application: `spin.toml` read, variables resolved, every component
//! compiled once, linked against the host interfaces and pre-instantiated for the
//! triggers that name it. Serving lives in `trigger_http` and `trigger_redis`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Engine, Store};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::bindings::redis_trigger::RedisTriggerPre;
use crate::bindings::SpinImports;
use crate::cache::compile_cached;
use crate::engine::{new_engine, GUEST_CALL_DEADLINE_TICKS};
use crate::instance_pool::{InstancePool, InstancePoolConfig};
use crate::kv::{KeyValueBackend, KvGrants};
use crate::manifest::{ComponentDef, Manifest};
use crate::outbound::AllowedHosts;
use crate::redis_out::RedisPool;
use crate::routes::Router;
use crate::state::{ComponentRuntime, HostState, Shared};
use crate::trigger_redis::{self, RedisTriggerPlan};
use crate::variables::Variables;

/// The key-value store labels this host provides: Spin's `default`, on
/// [`HostConfig::kv_path`]. Any other label a component lists fails the load.
pub const KV_STORE_LABELS: &[&str] = &["default"];

/// Settings of the embedded host that are not part of `spin.toml` (Spin keeps these
/// in its runtime config and CLI flags).
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// SQLite file backing the `default` key-value store.
    pub kv_path: PathBuf,
    /// Redis URL: sets the `redis_url` variable and replaces the application's
    /// Redis-trigger address.
    pub redis_url: Option<String>,
    /// Variable values that win over `SPIN_VARIABLE_*` and defaults.
    pub variable_overrides: BTreeMap<String, String>,
    /// Where precompiled components are cached (keyed by the .wasm's hash).
    pub cache_dir: Option<PathBuf>,
    /// How many instances run at once and how long a request waits for one.
    pub instances: InstancePoolConfig,
}

/// One component, ready to instantiate for the triggers that name it.
pub(crate) struct LoadedComponent {
    pub(crate) runtime: Arc<ComponentRuntime>,
    pub(crate) http: Option<ProxyPre<HostState>>,
    pub(crate) redis: Option<RedisTriggerPre<HostState>>,
}

/// A running Spin application hosted in-process.
pub struct App {
    engine: Engine,
    manifest: Manifest,
    pub(crate) router: Router,
    pub(crate) components: HashMap<String, LoadedComponent>,
    shared: Arc<Shared>,
    pub(crate) redis_triggers: Vec<RedisTriggerPlan>,
    variables: Variables,
    pub(crate) pool: InstancePool,
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

impl App {
    /// Loads `spin.toml`, compiles every component and checks its imports;
    /// `SPIN_VARIABLE_*` come from the process environment.
    pub async fn load(manifest_path: &Path, config: HostConfig, kv: Arc<dyn KeyValueBackend>) -> anyhow::Result<Self> {
        Self::load_with_env(manifest_path, config, kv, |k| std::env::var(k).ok()).await
    }

    /// [`App::load`] with `SPIN_VARIABLE_*` looked up through `env` (tests pass their
    /// own instead of mutating the process environment).
    pub async fn load_with_env(
        manifest_path: &Path,
        config: HostConfig,
        kv: Arc<dyn KeyValueBackend>,
        env: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Self> {
        let manifest = Manifest::load(manifest_path)?;
        let variables = resolve_variables(&manifest, &config, env)?;
        let redis_triggers = trigger_redis::plan(&manifest, &variables, config.redis_url.as_deref())
            .context("[application.trigger.redis] address")?;
        let kv_labels: Vec<String> = KV_STORE_LABELS.iter().map(|l| (*l).to_owned()).collect();
        let engine = new_engine(config.instances.max_instances)?;
        let linker = linker(&engine)?;
        let mut components = HashMap::new();
        for (id, def) in &manifest.components {
            let loaded = load_component(&engine, &linker, &manifest, def, &variables, &kv_labels, config.cache_dir.as_deref())
                .with_context(|| format!("component `{id}`"))?;
            components.insert(id.clone(), loaded);
        }
        let router = Router::new(manifest.http_triggers.iter().map(|t| (t.route.as_str(), t.component.as_str())));
        let shared = Arc::new(Shared { kv, kv_labels, redis: RedisPool::default() });
        let pool = InstancePool::new(config.instances);
        Ok(App { engine, manifest, router, components, shared, redis_triggers, variables, pool })
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

    /// Requests waiting for a free component instance now.
    pub fn queued_requests(&self) -> usize {
        self.pool.queued()
    }

    /// A store for one guest call of `runtime`'s component, trapping after
    /// [`crate::GUEST_CALL_TIMEOUT`].
    pub(crate) fn new_store(&self, runtime: &Arc<ComponentRuntime>) -> Store<HostState> {
        let mut store = Store::new(&self.engine, HostState::new(runtime.clone(), self.shared.clone()));
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(GUEST_CALL_DEADLINE_TICKS);
        store.epoch_deadline_trap();
        store
    }
}

/// Application variables: host overrides, then `SPIN_VARIABLE_*`, then defaults.
/// `--redis` also sets `redis_url` when the manifest declares it (and nothing
/// overrides it already), so components and triggers agree on one Redis.
fn resolve_variables(
    manifest: &Manifest,
    config: &HostConfig,
    env: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Variables> {
    let mut overrides = config.variable_overrides.clone();
    if let Some(url) = &config.redis_url {
        if manifest.variables.contains_key("redis_url") {
            overrides.entry("redis_url".into()).or_insert_with(|| url.clone());
        }
    }
    Ok(Variables::resolve(manifest, &overrides, env)?)
}

/// WASI 0.2, wasi:http and the Spin interfaces (`host::*`), for every component.
fn linker(engine: &Engine) -> anyhow::Result<Linker<HostState>> {
    let mut linker: Linker<HostState> = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)
        .map_err(anyhow::Error::from)
        .context("linking WASI 0.2")?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
        .map_err(anyhow::Error::from)
        .context("linking wasi:http")?;
    SpinImports::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
        .map_err(anyhow::Error::from)
        .context("linking the Spin interfaces")?;
    Ok(linker)
}

/// Checks one component's grants, renders its variables and allow-list, compiles it
/// (or loads it from the cache) and pre-instantiates it for its triggers.
fn load_component(
    engine: &Engine,
    linker: &Linker<HostState>,
    manifest: &Manifest,
    def: &ComponentDef,
    variables: &Variables,
    kv_labels: &[String],
    cache_dir: Option<&Path>,
) -> anyhow::Result<LoadedComponent> {
    // Checked before compiling, so a typo in a label fails fast and names itself.
    for label in &def.key_value_stores {
        if !kv_labels.contains(label) {
            bail!("uses key-value store `{label}`, which this host does not define (defined: {kv_labels:?})");
        }
    }
    let rendered_hosts = def
        .allowed_outbound_hosts
        .iter()
        .map(|h| variables.render(h))
        .collect::<Result<Vec<_>, _>>()
        .context("allowed_outbound_hosts")?;
    let allowed_hosts = AllowedHosts::parse(&rendered_hosts)
        .map_err(anyhow::Error::msg)
        .context("allowed_outbound_hosts")?;
    let runtime = Arc::new(ComponentRuntime {
        id: def.id.clone(),
        kv_grants: KvGrants::new(def.key_value_stores.clone()),
        allowed_hosts: Arc::new(allowed_hosts),
        variables: variables.for_component(&def.variables).context("variables")?,
    });
    let started = Instant::now();
    let component =
        compile_cached(engine, &def.source, cache_dir).with_context(|| format!("loading {}", def.source.display()))?;
    let pre = linker
        .instantiate_pre(&component)
        .map_err(anyhow::Error::from)
        .context("imports an interface this host does not provide")?;
    let http = if manifest.http_triggers.iter().any(|t| t.component == def.id) {
        Some(
            ProxyPre::new(pre.clone())
                .map_err(anyhow::Error::from)
                .context("is on an HTTP route but does not export wasi:http/incoming-handler@0.2.x")?,
        )
    } else {
        None
    };
    let redis = if manifest.redis_triggers.iter().any(|t| t.component == def.id) {
        Some(
            RedisTriggerPre::new(pre)
                .map_err(anyhow::Error::from)
                .context("is on a Redis trigger but does not export fermyon:spin/inbound-redis")?,
        )
    } else {
        None
    };
    tracing::debug!(component = %def.id, elapsed_ms = started.elapsed().as_millis() as u64, "component loaded");
    Ok(LoadedComponent { runtime, http, redis })
}
