//! Real-time factor of the local Whisper engine on a WAV file, with per-stage timings.
//!
//! `cargo run --release -p earshot-asr --example rtf -- [--threads N] [--pad-ms MS] [--model DIR] <16 kHz mono s16 wav>...`
//!
//! For each file: one pass over the whole file (as a final is decoded), then the file
//! streamed through a session in 100 ms pushes (VAD, interims, finals). Convert other audio
//! with `sox in.wav -r 16000 -c 1 -b 16 out.wav`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use earshot_asr::{default_model_dir, pcm_to_f32, Session, SessionSpec, WhisperConfig, WhisperEngine};

/// Bytes per push when streaming: 100 ms, as the relay batches.
const CHUNK_BYTES: usize = 3_200;

/// The PCM of a 16 kHz mono 16-bit WAV file.
fn read_wav(path: &PathBuf) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        bail!("{} is not a RIFF/WAVE file", path.display());
    }
    let mut at = 12;
    let mut format_ok = false;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into()?) as usize;
        let body = &bytes[at + 8..(at + 8 + len).min(bytes.len())];
        if id == b"fmt " && body.len() >= 16 {
            let channels = u16::from_le_bytes([body[2], body[3]]);
            let rate = u32::from_le_bytes(body[4..8].try_into()?);
            let bits = u16::from_le_bytes([body[14], body[15]]);
            if (channels, rate, bits) != (1, 16_000, 16) {
                bail!(
                    "{}: {channels} channel(s), {rate} Hz, {bits} bit; want 1, 16000, 16 (sox in.wav -r 16000 -c 1 -b 16 out.wav)",
                    path.display()
                );
            }
            format_ok = true;
        } else if id == b"data" {
            if !format_ok {
                bail!("{}: data before fmt", path.display());
            }
            return Ok(body.to_vec());
        }
        at += 8 + len + (len & 1);
    }
    bail!("{}: no data chunk", path.display())
}

fn main() -> Result<()> {
    let mut config = WhisperConfig::default();
    let mut model = default_model_dir();
    let mut files = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--threads" => config.threads = args.next().context("--threads N")?.parse()?,
            "--pad-ms" => config.final_pad_ms = args.next().context("--pad-ms MS")?.parse()?,
            "--model" => model = Some(args.next().context("--model DIR")?.into()),
            _ => files.push(PathBuf::from(arg)),
        }
    }
    if files.is_empty() {
        bail!("usage: rtf [--threads N] [--pad-ms MS] [--model DIR] <16 kHz mono s16 wav>...");
    }
    let model = model.context("no model folder: set EARSHOT_MODEL_DIR or HOME")?;
    let t = Instant::now();
    let engine = WhisperEngine::load(&model, config.clone())
        .with_context(|| format!("loading {} (run scripts/fetch-model.sh)", model.display()))?;
    println!(
        "model {} loaded in {:.0} ms; threads {}, final pad {} ms",
        model.display(),
        t.elapsed().as_secs_f64() * 1000.0,
        config.threads,
        config.final_pad_ms
    );
    println!(
        "{:<28} {:>8} {:>8} {:>9} {:>9} {:>7} {:>9} {:>7} {:>9} {:>7}",
        "file",
        "audio_s",
        "mel_ms",
        "encode_ms",
        "decode_ms",
        "tokens",
        "ms/token",
        "rtf",
        "stream_s",
        "s_rtf"
    );
    for file in &files {
        let pcm = read_wav(file)?;
        let audio_s = pcm.len() as f64 / 32_000.0;
        // Warm-up pass so allocation and page faults are not timed.
        engine.transcribe(&pcm_to_f32(&pcm[..pcm.len().min(32_000)]))?;
        let t = Instant::now();
        let pass = engine.transcribe(&pcm_to_f32(&pcm))?;
        let whole = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut session = engine.open_session(&SessionSpec::new("bench", "mic"));
        let mut finals = Vec::new();
        for chunk in pcm.chunks(CHUNK_BYTES) {
            finals.extend(session.push(chunk)?.into_iter().filter(|h| h.is_final));
        }
        finals.extend(session.flush()?.into_iter().filter(|h| h.is_final));
        let streamed = t.elapsed().as_secs_f64();
        let tm = pass.timings;
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        println!(
            "{:<28} {:>8.2} {:>8.1} {:>9.1} {:>9.1} {:>7} {:>9.1} {:>7.3} {:>9.2} {:>7.3}",
            name,
            audio_s,
            tm.mel_ms,
            tm.encode_ms,
            tm.decode_ms,
            tm.tokens,
            tm.decode_ms / tm.tokens.max(1) as f64,
            whole / audio_s,
            streamed,
            streamed / audio_s
        );
        println!("  one pass: {}", pass.text);
        println!("  stream stats: {:?}", session.stats());
        println!(
            "  stream:   {}",
            finals
                .iter()
                .map(|h| format!("[{}-{}] {}", h.start_ms, h.end_ms, h.text))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    Ok(())
}
