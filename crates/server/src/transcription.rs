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
    #[arg(long = "asr-model", env = "EARSHOT_ASR_MODEL", conflicts_with = "deepgram")]
    pub model: Option<PathBuf>,
    /// Threads the model runs on (default: every core).
    #[arg(long = "asr-threads", env = "EARSHOT_ASR_THREADS")]
    pub threads: Option<usize>,
    /// Transcribe with Deepgram live instead of the local model; the key comes from
    /// DEEPGRAM_API_KEY (never a flag: it would show in `ps`).
    #[arg(long, env = "EARSHOT_DEEPGRAM")]
    pub deepgram: bool,
    /// Deepgram's base URL (self-hosted Deepgram; default wss://api.deepgram.com).
    #[arg(long = "deepgram-url", env = "DEEPGRAM_URL", requires = "deepgram")]
    pub deepgram_url: Option<String>,
    /// Deepgram model (default nova-3).
    #[arg(long = "deepgram-model", requires = "deepgram")]
    pub deepgram_model: Option<String>,
}

/// The engine a worker runs.
#[derive(Debug, Clone)]
pub enum EngineChoice {
    /// Local Whisper from this model folder.
    Whisper(PathBuf),
    /// Deepgram live.
    Deepgram,
}

impl std::fmt::Display for EngineChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EngineChoice::Whisper(dir) => write!(f, "whisper ({})", dir.display()),
            EngineChoice::Deepgram => f.write_str("deepgram"),
        }
    }
}

/// A model folder `dir` holds weights the engine can load.
fn has_model(dir: &Path) -> bool {
    dir.join("model.bin").is_file() || dir.join("model.safetensors").is_file()
}

impl AsrArgs {
    /// The engine these settings pick: Deepgram when asked, else the model folder given,
    /// else the default folder when it holds a model; `None` when there is none.
    pub fn choice(&self) -> Option<EngineChoice> {
        if self.deepgram {
            return Some(EngineChoice::Deepgram);
        }
        match &self.model {
            Some(dir) => Some(EngineChoice::Whisper(dir.clone())),
            None => earshot_asr::default_model_dir().filter(|d| has_model(d)).map(EngineChoice::Whisper),
        }
    }
}

/// Builds the engine `choice` names (the local model loads in seconds, on a blocking
/// thread; Deepgram only checks its settings — it connects per stream).
pub async fn load_engine(choice: &EngineChoice, args: &AsrArgs) -> anyhow::Result<Arc<dyn Engine>> {
    match choice {
        EngineChoice::Whisper(dir) => {
            let mut config = earshot_asr::WhisperConfig::default();
            if let Some(threads) = args.threads {
                config.threads = threads;
            }
            let path = dir.clone();
            let engine = tokio::task::spawn_blocking(move || earshot_asr::WhisperEngine::load(&path, config))
                .await
                .context("loading the speech model")?
                .with_context(|| format!("loading the speech model in {}", dir.display()))?;
            Ok(Arc::new(engine))
        }
        EngineChoice::Deepgram => {
            let key = std::env::var(earshot_asr_deepgram::API_KEY_ENV)
                .ok()
                .filter(|k| !k.is_empty())
                .with_context(|| format!("--deepgram needs the API key in {}", earshot_asr_deepgram::API_KEY_ENV))?;
            let mut config = earshot_asr_deepgram::DeepgramConfig::new(key);
            if let Some(url) = &args.deepgram_url {
                config = config.with_base_url(url.clone());
            }
            if let Some(model) = &args.deepgram_model {
                config.model = Some(model.clone());
            }
            Ok(Arc::new(earshot_asr_deepgram::DeepgramEngine::new(config).context("configuring Deepgram")?))
        }
    }
}

/// Where the in-process worker's figures appear once it runs (it loads in the background).
pub(crate) type StatsSlot = Arc<std::sync::OnceLock<Arc<earshot_transcriber::WorkerStats>>>;

/// What `earshot up`'s in-process worker will run with, decided at bind time so the
/// startup log says plainly whether speech-to-text is on, and why not.
pub(crate) struct WorkerPlan {
    choice: EngineChoice,
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
        let Some(choice) = args.choice() else {
            tracing::warn!(
                event = "asr_off",
                "no speech-to-text: no model (run scripts/fetch-model.sh, or pass --asr-model <dir>)"
            );
            return None;
        };
        Some(WorkerPlan { choice, args: args.clone(), redis_url: redis_url.to_owned() })
    }

    /// Loads the model (seconds, after the server already listens) and runs the worker
    /// until `shutdown`; its figures go into `stats`.
    pub(crate) async fn run(self, stats: StatsSlot, shutdown: impl std::future::Future<Output = ()> + Send) -> anyhow::Result<()> {
        let engine = load_engine(&self.choice, &self.args).await?;
        tracing::info!(event = "asr_ready", engine = %self.choice, "speech-to-text ready");
        let worker = Worker::new(WorkerConfig::new(self.redis_url), engine).context("starting the transcription worker")?;
        let _ = stats.set(worker.stats());
        worker.run(shutdown).await.context("running the transcription worker")
    }
}
