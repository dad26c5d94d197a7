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

/// The in-process worker of `earshot up`, when it can run: Redis to read audio from and
/// a model to transcribe with. Says in the log why not, and how to get there.
pub(crate) async fn in_process_worker(
    args: &AsrArgs,
    disabled: bool,
    redis_url: Option<&str>,
) -> anyhow::Result<Option<Worker>> {
    if disabled {
        return Ok(None);
    }
    let Some(redis_url) = redis_url else {
        tracing::warn!(event = "asr_off", "no speech-to-text: it reads audio from Redis, and there is none");
        return Ok(None);
    };
    let Some(dir) = model_dir(args) else {
        tracing::warn!(
            event = "asr_off",
            "no speech-to-text: no model (run scripts/fetch-model.sh, or pass --asr-model <dir>)"
        );
        return Ok(None);
    };
    let engine = load_engine(&dir, args).await?;
    tracing::info!(event = "asr_ready", engine = engine.name(), model = %dir.display(), "speech-to-text ready");
    let worker = Worker::new(WorkerConfig::new(redis_url), engine).context("starting the transcription worker")?;
    Ok(Some(worker))
}
