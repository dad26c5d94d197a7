//! Per-instance store data: WASI contexts plus what the Spin interfaces need.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime::StoreLimits;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::kv::{KeyValueBackend, KvGrants};
use crate::outbound::AllowedHosts;
use crate::redis_out::RedisPool;

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
    pub(crate) allowed_hosts: AllowedHosts,
    /// Component variables, rendered.
    pub(crate) variables: BTreeMap<String, String>,
}

/// The `T` of `Store<T>`: lives for one request or one Redis message.
pub(crate) struct HostState {
    pub(crate) wasi: WasiCtx,
    pub(crate) http: WasiHttpCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limits: StoreLimits,
    pub(crate) hooks: crate::outbound_http::OutboundHttpHooks,
    pub(crate) component: Arc<ComponentRuntime>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) stdout: MemoryOutputPipe,
    pub(crate) stderr: MemoryOutputPipe,
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
