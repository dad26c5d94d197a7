//! `earshot demo-wav`: known test audio (tone, digital silence, tone) for the README
//! walkthrough and for tests of what listens to the audio (the analytics VAD).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;

use crate::wav::{self, PcmFormat};

/// The demo's format: what capture agents send by default (16 kHz mono).
const DEMO_FORMAT: PcmFormat = PcmFormat { sample_rate: 16_000, channels: 1 };
/// Tone frequency, Hz: concert A, well inside speech band filters, and a whole number
/// of cycles per second, so a tone of whole seconds starts and ends at zero (no click).
const TONE_HZ: f64 = 440.0;
/// Tone peak as a fraction of full scale: -10 dBFS is clearly "voice" to a VAD yet far
/// from clipping after resampling or mixing.
const TONE_PEAK: f64 = 0.316;
/// Longest segment, in seconds: the demo is for walkthroughs and tests, not soak runs.
const MAX_SECONDS_EACH: f64 = 3_600.0;

/// What the demo contains, segment by segment.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub(crate) enum Pattern {
    /// Tone, digital silence, tone.
    ToneSilenceTone,
    /// One tone segment.
    Tone,
    /// One segment of digital silence.
    Silence,
}

impl Pattern {
    /// Per segment: tone (`true`) or silence.
    fn segments(self) -> &'static [bool] {
        match self {
            Pattern::ToneSilenceTone => &[true, false, true],
            Pattern::Tone => &[true],
            Pattern::Silence => &[false],
        }
    }
}

/// `earshot demo-wav` flags.
#[derive(clap::Args)]
pub(crate) struct DemoWavArgs {
    /// Output file (`-` for stdout).
    out: PathBuf,
    /// Segments to write.
    #[arg(long, value_enum, default_value = "tone-silence-tone")]
    pattern: Pattern,
    /// Length of each segment, seconds.
    #[arg(long, default_value_t = 1.0)]
    seconds_each: f64,
}

/// The samples of `pattern` (16 kHz mono).
pub(crate) fn samples(pattern: Pattern, seconds_each: f64) -> anyhow::Result<Vec<i16>> {
    anyhow::ensure!(
        seconds_each.is_finite() && seconds_each > 0.0 && seconds_each <= MAX_SECONDS_EACH,
        "--seconds-each must be more than 0 and at most {MAX_SECONDS_EACH}"
    );
    let rate = f64::from(DEMO_FORMAT.sample_rate);
    let per_segment = (seconds_each * rate).round() as usize;
    let peak = TONE_PEAK * f64::from(i16::MAX);
    let mut out = Vec::with_capacity(per_segment * pattern.segments().len());
    for &tone in pattern.segments() {
        out.extend((0..per_segment).map(|n| {
            if tone {
                (peak * (2.0 * std::f64::consts::PI * TONE_HZ * n as f64 / rate).sin()).round() as i16
            } else {
                0
            }
        }));
    }
    Ok(out)
}

/// Runs `earshot demo-wav`.
pub(crate) fn run(args: DemoWavArgs) -> anyhow::Result<()> {
    let samples = samples(args.pattern, args.seconds_each)?;
    let seconds = samples.len() as f64 / f64::from(DEMO_FORMAT.sample_rate);
    if args.out.as_os_str() == "-" {
        let mut out = std::io::stdout().lock();
        wav::write_wav(&mut out, DEMO_FORMAT, &samples).context("writing the WAV to stdout")?;
    } else {
        let file = std::fs::File::create(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
        let mut out = std::io::BufWriter::new(file);
        wav::write_wav(&mut out, DEMO_FORMAT, &samples).with_context(|| format!("writing {}", args.out.display()))?;
        out.into_inner().map_err(|e| e.into_error()).and_then(|f| f.sync_all()).with_context(|| format!("writing {}", args.out.display()))?;
        eprintln!(
            "wrote {}: {seconds:.1} s of 16 kHz mono 16-bit PCM ({:?}, {} data bytes)",
            args.out.display(),
            args.pattern,
            samples.len() * 2
        );
    }
    std::io::stderr().flush().ok();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tone_silence_tone_has_the_right_shape() {
        let s = samples(Pattern::ToneSilenceTone, 1.0).unwrap();
        assert_eq!(s.len(), 48_000);
        let rms = |x: &[i16]| (x.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / x.len() as f64).sqrt();
        let expected = TONE_PEAK * f64::from(i16::MAX) / 2f64.sqrt();
        assert!((rms(&s[..16_000]) - expected).abs() < 50.0);
        assert!(s[16_000..32_000].iter().all(|&v| v == 0), "digital silence");
        assert!((rms(&s[32_000..]) - expected).abs() < 50.0);
        // Whole seconds of 440 Hz are whole cycles: the tone starts at zero and its last
        // sample is one step before zero again, so neither edge clicks.
        assert_eq!(s[0], 0);
        assert_eq!(s[15_999], -s[1]);
    }

    #[test]
    fn refuses_silly_lengths() {
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e9] {
            assert!(samples(Pattern::Tone, bad).is_err(), "{bad}");
        }
    }
}
