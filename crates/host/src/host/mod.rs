//! The host interfaces a spin-sdk component imports beyond WASI, one module per
//! capability, each implemented once over the shared backends with Spin's error
//! semantics: key-value (`fermyon:spin/key-value` and `wasi:keyvalue`), outbound
//! Redis (`fermyon:spin/redis`) and variables (`fermyon:spin/variables`).

pub(crate) mod kv;
pub(crate) mod redis;
pub(crate) mod variables;

/// What every host function returns: `Err` traps the guest, `Ok(Err(_))` is the
/// interface's own error the guest sees.
type Wt<T> = wasmtime::Result<T>;

#[cfg(test)]
pub(crate) mod testing {
    //! A [`HostState`] without an engine: the host interfaces are plain Rust trait
    //! methods, so a test calls them exactly as the generated glue would, minus the
    //! canonical ABI.

    use std::collections::BTreeMap;
    use std::sync::Arc;

    use wasmtime::component::Resource;

    use crate::kv::{KeyValueBackend, KvGrants, SqliteKv};
    use crate::outbound::AllowedHosts;
    use crate::redis_out::RedisPool;
    use crate::state::{ComponentRuntime, HostState, Shared};

    /// What a test component is granted.
    #[derive(Default)]
    pub(crate) struct Grants<'a> {
        pub(crate) kv: &'a [&'a str],
        pub(crate) outbound: &'a [&'a str],
        pub(crate) variables: &'a [(&'a str, &'a str)],
    }

    /// Per-call state for a component named `test` with `grants`, on `kv` (the host
    /// provides the `default` store only, as the embedded host does).
    pub(crate) fn state_with(kv: Arc<dyn KeyValueBackend>, grants: Grants<'_>) -> HostState {
        let owned = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let runtime = ComponentRuntime {
            id: "test".into(),
            kv_grants: KvGrants::new(owned(grants.kv)),
            allowed_hosts: Arc::new(AllowedHosts::parse(&owned(grants.outbound)).expect("test allow-list parses")),
            variables: grants.variables.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect::<BTreeMap<_, _>>(),
        };
        let shared = Shared { kv, kv_labels: vec!["default".into()], redis: RedisPool::default() };
        HostState::new(Arc::new(runtime), Arc::new(shared))
    }

    /// Like [`state_with`] over a fresh in-memory SQLite store.
    pub(crate) fn state(grants: Grants<'_>) -> HostState {
        state_with(Arc::new(SqliteKv::in_memory().expect("in-memory sqlite")), grants)
    }

    /// A borrow of `r` for one method call (the guest passes `borrow<T>` to methods).
    pub(crate) fn borrow<T: 'static>(r: &Resource<T>) -> Resource<T> {
        Resource::new_borrow(r.rep())
    }
}
