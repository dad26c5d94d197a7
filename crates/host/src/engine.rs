//! The wasmtime engine every component of the app runs on: a pooling allocator sized
//! for the host's instance cap, and an epoch ticker that interrupts runaway guests.

use std::time::Duration;

use anyhow::Context;
use wasmtime::Engine;

/// Most component instances alive at once by default (see
/// [`crate::instance_pool::DEFAULT_MAX_INSTANCES`] for why); requests beyond it queue.
pub const MAX_CONCURRENT_INSTANCES: u32 = crate::instance_pool::DEFAULT_MAX_INSTANCES;

/// Linear memory one instance may grow to, in bytes. Earshot's components need a
/// few MiB (a 64 KiB PCM frame, a JSON body); 64 MiB leaves room without letting
/// one request eat the machine.
pub(crate) const MAX_INSTANCE_MEMORY_BYTES: usize = 64 << 20;

/// Wall-clock budget of one guest call. Components answer in milliseconds; a guest
/// stuck in a loop is trapped after this instead of holding an instance forever.
pub const GUEST_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Epoch tick: the granularity at which runaway guests are interrupted.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// How much a guest may print per call, in bytes; beyond it output is dropped, so a
/// chatty guest cannot grow the relay's memory.
pub(crate) const GUEST_OUTPUT_LIMIT_BYTES: usize = 64 << 10;

/// Guard region after each linear memory, in bytes: enough to elide most bounds
/// checks' edge cases while keeping the pool's reservation small.
const MEMORY_GUARD_BYTES: u64 = 64 << 10;

/// Epoch ticks a guest call may run before it traps ([`GUEST_CALL_TIMEOUT`] in ticks).
pub(crate) const GUEST_CALL_DEADLINE_TICKS: u64 = (GUEST_CALL_TIMEOUT.as_millis() / EPOCH_TICK.as_millis()) as u64;

/// Builds the engine, its pool sized for `max_instances` component instances, and
/// starts its epoch ticker (which stops when the engine is dropped).
pub(crate) fn new_engine(max_instances: u32) -> anyhow::Result<Engine> {
    anyhow::ensure!(max_instances > 0, "the instance pool needs at least one slot");
    let mut config = wasmtime::Config::new();
    config.epoch_interruption(true);
    let mut pool = wasmtime::PoolingAllocationConfig::default();
    pool.total_component_instances(max_instances);
    // A wasm32-wasip2 component holds a handful of core instances (the module, the
    // adapter shims); 16 each is generous.
    pool.max_core_instances_per_component(16);
    pool.total_core_instances(max_instances * 8);
    pool.max_memories_per_component(4);
    pool.total_memories(max_instances * 2);
    pool.max_tables_per_component(8);
    pool.total_tables(max_instances * 8);
    pool.max_memory_size(MAX_INSTANCE_MEMORY_BYTES);
    // No `linear_memory_keep_resident`: tried at 1 MiB, the dirty pages an ingest
    // handshake leaves were memset on every instance drop (16.5 % of the hop's CPU,
    // BENCHMARKS.md), more than the madvise and page faults it replaced (~7 %).
    config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    // Reserve only what an instance may use: the default 4 GiB per memory times the
    // pool size would exhaust a container's address-space limit.
    config.memory_reservation(MAX_INSTANCE_MEMORY_BYTES as u64);
    config.memory_guard_size(MEMORY_GUARD_BYTES);
    let engine = Engine::new(&config)
        .map_err(anyhow::Error::from)
        .context("creating the wasmtime engine")?;
    spawn_epoch_ticker(&engine)?;
    Ok(engine)
}

/// A plain thread, not a tokio task: the tick must keep coming even when every
/// runtime worker is busy running the guest it is meant to interrupt.
fn spawn_epoch_ticker(engine: &Engine) -> anyhow::Result<()> {
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
        .context("spawning the epoch thread")?;
    Ok(())
}
