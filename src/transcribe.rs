//! `earshot transcribe`: a transcription worker on its own — the same worker `earshot up`
//! runs in-process. Any number of them share one Redis; each stream gets exactly one.

use anyhow::Context;
use earshot_server::transcription::{load_engine, AsrArgs};
use earshot_transcriber::{Worker, WorkerConfig};

/// Flags of `earshot transcribe`.
#[derive(clap::Args)]
pub(crate) struct TranscribeArgs {
    /// Redis the ingest components write audio to (e.g. redis://127.0.0.1:6379).
    #[arg(long, env = "EARSHOT_REDIS")]
    redis: String,
    /// The speech model.
    #[command(flatten)]
    asr: AsrArgs,
    /// This worker's id in its leases (default: host, pid and a random suffix).
    #[arg(long, env = "EARSHOT_WORKER_ID")]
    worker_id: Option<String>,
}

/// Runs the worker until SIGTERM or Ctrl-C, then releases its leases.
pub(crate) async fn run(args: TranscribeArgs, shutdown: impl std::future::Future<Output = &'static str> + Send) -> anyhow::Result<()> {
    let choice = args.asr.choice().context(
        "no speech model: run scripts/fetch-model.sh (it fills ~/.cache/earshot/models/whisper-tiny.en), pass --asr-model <dir>, or --deepgram",
    )?;
    let engine = load_engine(&choice, &args.asr).await?;
    let mut config = WorkerConfig::new(args.redis);
    config.worker_id = args.worker_id;
    let worker = Worker::new(config, engine).context("starting the transcription worker")?;
    tracing::info!(event = "transcribing", worker_id = worker.id(), engine = %choice, "transcription worker running");
    worker
        .run(async move {
            let signal = shutdown.await;
            tracing::info!(event = "shutdown", signal, "stopping the transcription worker");
        })
        .await
        .context("running the transcription worker")
}
