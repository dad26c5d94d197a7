//! Host bindings for the Spin interfaces, generated from the WIT under `wit/`.

#![allow(missing_docs, unreachable_pub)]

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "earshot:host/spin-imports",
    imports: { default: async | trappable },
    with: {
        "fermyon:spin/key-value.store": crate::host::kv::KvStoreHandle,
        "fermyon:spin/redis.connection": crate::redis_out::RedisConnection,
        "wasi:keyvalue/store.bucket": crate::host::kv::KvStoreHandle,
        "wasi:keyvalue/atomics.cas": crate::host::kv::CasHandle,
    },
});

/// The Redis-trigger world (`#[redis_component]` exports `fermyon:spin/inbound-redis`).
pub mod redis_trigger {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "earshot:host/redis-trigger",
        exports: { default: async },
    });
}
