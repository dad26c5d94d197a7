//! Per-instance store data: WASI contexts plus what the Spin interfaces need.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::engine::{GUEST_OUTPUT_LIMIT_BYTES, MAX_INSTANCE_MEMORY_BYTES};
use crate::kv::{KeyValueBackend, KvGrants};
use crate::outbound::AllowedHosts;
use crate::outbound_http::OutboundHttpHooks;
use crate::redis_out::RedisPool;

/// Core wasm instances one component instance may create: a wasm32-wasip2 component
/// holds a handful (the module, the adapter shims); 32 leaves room without letting a
/// hostile component multiply itself.
const MAX_CORE_INSTANCES_PER_STORE: usize = 32;

/// What every instance of every component shares: backends and host settings.
pub(crate) struct Shared {
    /// Key-value backend for all store labels.
    pub(crate) kv: Arc<dyn KeyValueBackend>,
    /// Store labels this host provides.
    pub(crate) kv_labels: Vec<String>,
    /// Outbound Redis connections.
    pub(crate) redis: RedisPool,
}

/// A component's fixed, per-app facts: grants and resolved variables.
pub(crate) struct ComponentRuntime {
    /// Component id from `spin.toml`.
    pub(crate) id: String,
    /// Key-value labels the component may open.
    pub(crate) kv_grants: KvGrants,
    /// Outbound allow-list.
    pub(crate) allowed_hosts: Arc<AllowedHosts>,
    /// Component variables, rendered.
    pub(crate) variables: BTreeMap<String, String>,
}

/// The `T` of `Store<T>`: lives for one request or one Redis message.
pub(crate) struct HostState {
    pub(crate) wasi: WasiCtx,
    pub(crate) http: WasiHttpCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limits: StoreLimits,
    pub(crate) hooks: OutboundHttpHooks,
    pub(crate) component: Arc<ComponentRuntime>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) stdout: MemoryOutputPipe,
    pub(crate) stderr: MemoryOutputPipe,
}

impl HostState {
    /// Fresh per-call state for `component`: guest output captured (bounded), memory
    /// capped, outbound HTTP gated on the component's allow-list.
    pub(crate) fn new(component: Arc<ComponentRuntime>, shared: Arc<Shared>) -> Self {
        let stdout = MemoryOutputPipe::new(GUEST_OUTPUT_LIMIT_BYTES);
        let stderr = MemoryOutputPipe::new(GUEST_OUTPUT_LIMIT_BYTES);
        let wasi = WasiCtx::builder().stdout(stdout.clone()).stderr(stderr.clone()).build();
        HostState {
            wasi,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(MAX_INSTANCE_MEMORY_BYTES)
                .instances(MAX_CORE_INSTANCES_PER_STORE)
                .build(),
            hooks: OutboundHttpHooks { allowed: component.allowed_hosts.clone() },
            component,
            shared,
            stdout,
            stderr,
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}
