//! Speech-to-text in `earshot up`: one transcription worker in-process, on the same
//! Redis as the components, with the local Whisper engine (or none, said plainly).
//! `earshot transcribe` runs the same worker on its own (see [`load_engine`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use earshot_asr_engine::Engine;
use earshot_transcriber::{Worker, WorkerConfig};

/// Settings of the speech-to-text engine, shared by `earshot up` and `earshot transcribe`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct AsrArgs {
    /// Whisper model folder (Hugging Face or CTranslate2/faster-whisper layout). Default:
    /// the folder `scripts/fetch-model.sh` fills ($EARSHOT_MODEL_DIR, else
    /// ~/.cache/earshot/models/whisper-tiny.en), when it holds a model.
    #[arg(long = "asr-model", env = "EARSHOT_ASR_MODEL")]
    pub model: Option<PathBuf>,
    /// Threads the model runs on (default: every core).
    #[arg(long = "asr-threads", env = "EARSHOT_ASR_THREADS")]
    pub threads: Option<usize>,
}

/// A model folder `dir` holds weights the engine can load.
fn has_model(dir: &Path) -> bool {
    dir.join("model.bin").is_file() || dir.join("model.safetensors").is_file()
}

/// The model folder to use: the one given, else the default one when it holds a model.
pub fn model_dir(args: &AsrArgs) -> Option<PathBuf> {
    match &args.model {
        Some(dir) => Some(dir.clone()),
        None => earshot_asr::default_model_dir().filter(|d| has_model(d)),
    }
}

/// Loads the local Whisper engine from `dir` (seconds: the weights are read and
/// converted), on a blocking thread.
pub async fn load_engine(dir: &Path, args: &AsrArgs) -> anyhow::Result<Arc<dyn Engine>> {
    let mut config = earshot_asr::WhisperConfig::default();
    if let Some(threads) = args.threads {
        config.threads = threads;
    }
    let path = dir.to_path_buf();
    let engine = tokio::task::spawn_blocking(move || earshot_asr::WhisperEngine::load(&path, config))
        .await
        .context("loading the speech model")?
        .with_context(|| format!("loading the speech model in {}", dir.display()))?;
    Ok(Arc::new(engine))
}

/// Where the in-process worker's figures appear once it runs (it loads in the background).
pub(crate) type StatsSlot = Arc<std::sync::OnceLock<Arc<earshot_transcriber::WorkerStats>>>;

/// What `earshot up`'s in-process worker will run with, decided at bind time so the
/// startup log says plainly whether speech-to-text is on, and why not.
pub(crate) struct WorkerPlan {
    dir: PathBuf,
    args: AsrArgs,
    redis_url: String,
}

impl WorkerPlan {
    /// A plan when the worker can run: Redis to read audio from and a model.
    pub(crate) fn new(args: &AsrArgs, disabled: bool, redis_url: Option<&str>) -> Option<WorkerPlan> {
        if disabled {
            return None;
        }
        let Some(redis_url) = redis_url else {
            tracing::warn!(event = "asr_off", "no speech-to-text: it reads audio from Redis, and there is none");
            return None;
        };
        let Some(dir) = model_dir(args) else {
            tracing::warn!(
                event = "asr_off",
                "no speech-to-text: no model (run scripts/fetch-model.sh, or pass --asr-model <dir>)"
            );
            return None;
        };
        Some(WorkerPlan { dir, args: args.clone(), redis_url: redis_url.to_owned() })
    }

    /// Loads the model (seconds, after the server already listens) and runs the worker
    /// until `shutdown`; its figures go into `stats`.
    pub(crate) async fn run(self, stats: StatsSlot, shutdown: impl std::future::Future<Output = ()> + Send) -> anyhow::Result<()> {
        let engine = load_engine(&self.dir, &self.args).await?;
        tracing::info!(event = "asr_ready", engine = engine.name(), model = %self.dir.display(), "speech-to-text ready");
        let worker = Worker::new(WorkerConfig::new(self.redis_url), engine).context("starting the transcription worker")?;
        let _ = stats.set(worker.stats());
        worker.run(shutdown).await.context("running the transcription worker")
    }
}
