//! `earshot up` in-process: the server library on its own thread and runtime, both
//! listeners on port 0. Faster than a process and debuggable in the test; tests where
//! the process itself is the point (SIGTERM, the startup line, the CLI) keep spawning
//! the binary.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context};
use earshot_server::{Server, ServerConfig};

/// Worker threads of an in-process server's runtime: two, like the machine, so a
/// test sees real concurrency without starving the test's own runtime.
const IN_PROCESS_WORKERS: usize = 2;

/// A server running on its own thread; stopped (drained) on drop.
pub(crate) struct InProcess {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
    pub(crate) public: SocketAddr,
    pub(crate) internal: SocketAddr,
}

/// Collects the server's log lines into the harness's buffer (the same lines the
/// binary prints on stdout).
#[derive(Clone)]
struct LogSink(Arc<Mutex<Vec<String>>>);

impl Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let mut logs = self.0.lock().unwrap();
        logs.extend(text.lines().filter(|l| !l.is_empty()).map(str::to_owned));
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl InProcess {
    /// Binds `config` and serves it until dropped. Log lines go to `logs`.
    pub(crate) fn start(config: ServerConfig, logs: Arc<Mutex<Vec<String>>>) -> anyhow::Result<InProcess> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<(SocketAddr, SocketAddr)>>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let sink = LogSink(logs);
        let thread = std::thread::Builder::new().name("earshot-in-process".into()).spawn(move || {
            let subscriber = tracing_subscriber::fmt()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
                .with_writer(move || sink.clone())
                .finish();
            let dispatch = tracing::Dispatch::new(subscriber);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(IN_PROCESS_WORKERS)
                .enable_all()
                // Every runtime thread logs into this server's buffer, not the test's.
                .on_thread_start({
                    let dispatch = dispatch.clone();
                    move || {
                        let guard = tracing::dispatcher::set_default(&dispatch);
                        std::mem::forget(guard);
                    }
                })
                .build()
                .context("building the server's runtime")?;
            let _guard = tracing::dispatcher::set_default(&dispatch);
            runtime.block_on(async move {
                let server = match Server::bind(config).await {
                    Ok(s) => s,
                    Err(e) => {
                        let message = format!("{e:#}");
                        let _ = ready_tx.send(Err(e));
                        return Err(anyhow!(message));
                    }
                };
                let _ = ready_tx.send(Ok((server.public_addr(), server.internal_addr())));
                server
                    .run(async move {
                        let _ = stop_rx.await;
                        "test finished"
                    })
                    .await
            })
        })?;
        let (public, internal) = ready_rx
            .recv_timeout(crate::STARTUP_TIMEOUT)
            .map_err(|_| anyhow!("the in-process server did not start within {:?}", crate::STARTUP_TIMEOUT))??;
        Ok(InProcess { stop: Some(stop_tx), thread: Some(thread), public, internal })
    }

    /// Drains the server and waits for its thread (bounded by the drain timeout).
    pub(crate) fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let Some(thread) = self.thread.take() else { return Ok(()) };
        let deadline = std::time::Instant::now() + earshot_server::DRAIN_TIMEOUT + Duration::from_secs(5);
        while !thread.is_finished() {
            if std::time::Instant::now() > deadline {
                return Err(anyhow!("the in-process server did not drain in time"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        thread.join().map_err(|_| anyhow!("the in-process server panicked"))?
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
