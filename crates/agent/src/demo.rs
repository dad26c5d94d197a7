//! Known test audio (tone, digital silence, tone) for the README walkthrough and for tests
//! of what listens to the audio (the analytics VAD); `earshot demo-wav` writes it.

use std::io::{self, Write};

use crate::wav::{self, PcmFormat};

/// The demo's format: what capture agents send by default (16 kHz mono).
pub const DEMO_FORMAT: PcmFormat = PcmFormat::MONO_16K;
/// Tone frequency, Hz: concert A, well inside speech band filters, and a whole number
/// of cycles per second, so a tone of whole seconds starts and ends at zero (no click).
const TONE_HZ: f64 = 440.0;
/// Tone peak as a fraction of full scale: -10 dBFS is clearly "voice" to a VAD yet far
/// from clipping after resampling or mixing.
const TONE_PEAK: f64 = 0.316;
/// Longest segment, in seconds: the demo is for walkthroughs and tests, not soak runs.
pub const MAX_SECONDS_EACH: f64 = 3_600.0;

/// Why no demo audio was written.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A segment length outside `(0, MAX_SECONDS_EACH]` (or not a number).
    #[error("segments must be more than 0 and at most {MAX_SECONDS_EACH} s long (got {0})")]
    BadLength(f64),
    /// Writing the WAV failed.
    #[error("writing the WAV: {0}")]
    Io(#[from] io::Error),
}

/// What the demo contains, segment by segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Pattern {
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

/// The samples of `pattern` (16 kHz mono).
pub fn samples(pattern: Pattern, seconds_each: f64) -> Result<Vec<i16>, DemoError> {
    if !(seconds_each.is_finite() && seconds_each > 0.0 && seconds_each <= MAX_SECONDS_EACH) {
        return Err(DemoError::BadLength(seconds_each));
    }
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

/// Writes `pattern` as a canonical 16 kHz mono WAV to `out`; returns the samples written.
pub fn write_demo(out: &mut impl Write, pattern: Pattern, seconds_each: f64) -> Result<usize, DemoError> {
    let samples = samples(pattern, seconds_each)?;
    wav::write_wav(out, DEMO_FORMAT, &samples)?;
    Ok(samples.len())
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
    fn the_written_file_reads_back_as_the_demo_format() {
        let mut out = Vec::new();
        let n = write_demo(&mut out, Pattern::Silence, 0.5).unwrap();
        assert_eq!(n, 8_000);
        let mut input = std::io::Cursor::new(out);
        let h = wav::read_header(&mut input).unwrap();
        assert_eq!((h.format, h.data_len), (DEMO_FORMAT, Some(16_000)));
    }

    #[test]
    fn refuses_silly_lengths() {
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e9] {
            assert!(matches!(samples(Pattern::Tone, bad), Err(DemoError::BadLength(_))), "{bad}");
        }
    }
}
