//! Whisper's input features: the log-mel spectrogram, computed as faster-whisper does.
//!
//! candle-transformers' `pcm_to_mel` is not used: it doubles the power (every value comes
//! out 0.075 high) and runs a per-frame FFT loop that takes 0.2 s a file. Here the short-
//! time Fourier transform of all frames is one matrix product against a DFT basis
//! (milliseconds), and the 80-band Slaney mel filter bank is computed in code, so no
//! `mel_filters.npz` ships with the crate.

use candle_core::{DType, Device, Tensor};

/// Samples per FFT window (25 ms at 16 kHz), Whisper's `N_FFT`.
pub(crate) const N_FFT: usize = 400;
/// Samples between frames (10 ms), Whisper's `HOP_LENGTH`: one mel frame per 10 ms.
pub(crate) const HOP: usize = 160;
/// Frequency bins of a real FFT of `N_FFT` samples.
const N_BINS: usize = N_FFT / 2 + 1;
/// Dynamic range kept below the loudest value, in log10 units (80 dB), as Whisper does.
const LOG_RANGE: f32 = 8.0;
/// Floor of the mel power before the logarithm (Whisper's `1e-10`).
const POWER_FLOOR: f32 = 1e-10;

/// Hz → mel on the Slaney scale (linear below 1 kHz, logarithmic above), librosa's default.
fn hz_to_mel(hz: f64) -> f64 {
    let f_sp = 200.0 / 3.0;
    let min_log_hz = 1000.0;
    let min_log_mel = min_log_hz / f_sp;
    let logstep = 6.4f64.ln() / 27.0;
    if hz >= min_log_hz {
        min_log_mel + (hz / min_log_hz).ln() / logstep
    } else {
        hz / f_sp
    }
}

/// The inverse of [`hz_to_mel`].
fn mel_to_hz(mel: f64) -> f64 {
    let f_sp = 200.0 / 3.0;
    let min_log_hz = 1000.0;
    let min_log_mel = min_log_hz / f_sp;
    let logstep = 6.4f64.ln() / 27.0;
    if mel >= min_log_mel {
        min_log_hz * (logstep * (mel - min_log_mel)).exp()
    } else {
        mel * f_sp
    }
}

/// The `n_mels` × `N_BINS` triangular filter bank, area-normalised (Slaney), 0–8 kHz.
pub(crate) fn mel_filters(n_mels: usize, sample_rate: u32) -> Vec<f32> {
    let sr = f64::from(sample_rate);
    let fft_freqs: Vec<f64> = (0..N_BINS).map(|k| k as f64 * sr / N_FFT as f64).collect();
    let (lo, hi) = (hz_to_mel(0.0), hz_to_mel(sr / 2.0));
    let points: Vec<f64> = (0..n_mels + 2)
        .map(|i| mel_to_hz(lo + (hi - lo) * i as f64 / (n_mels + 1) as f64))
        .collect();
    let mut out = vec![0f32; n_mels * N_BINS];
    for m in 0..n_mels {
        let (left, centre, right) = (points[m], points[m + 1], points[m + 2]);
        let norm = 2.0 / (right - left);
        for (k, &f) in fft_freqs.iter().enumerate() {
            let up = (f - left) / (centre - left);
            let down = (right - f) / (right - centre);
            out[m * N_BINS + k] = (up.min(down).max(0.0) * norm) as f32;
        }
    }
    out
}

/// Computes log-mel features; built once per model and shared by its sessions.
#[derive(Debug, Clone)]
pub(crate) struct MelFrontend {
    n_mels: usize,
    /// `N_FFT` × `2 * N_BINS`: Hann-windowed cosines then sines.
    basis: Tensor,
    /// `N_BINS` × `n_mels`.
    filters_t: Tensor,
}

impl MelFrontend {
    pub(crate) fn new(n_mels: usize, sample_rate: u32) -> candle_core::Result<Self> {
        let window: Vec<f64> = (0..N_FFT)
            .map(|n| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * n as f64 / N_FFT as f64).cos())
            .collect();
        let mut basis = vec![0f32; N_FFT * 2 * N_BINS];
        for (n, w) in window.iter().enumerate() {
            for k in 0..N_BINS {
                let angle = 2.0 * std::f64::consts::PI * (k * n % N_FFT) as f64 / N_FFT as f64;
                basis[n * 2 * N_BINS + k] = (w * angle.cos()) as f32;
                basis[n * 2 * N_BINS + N_BINS + k] = (-w * angle.sin()) as f32;
            }
        }
        let basis = Tensor::from_vec(basis, (N_FFT, 2 * N_BINS), &Device::Cpu)?;
        let filters = Tensor::from_vec(
            mel_filters(n_mels, sample_rate),
            (n_mels, N_BINS),
            &Device::Cpu,
        )?;
        Ok(MelFrontend {
            n_mels,
            basis,
            filters_t: filters.t()?.contiguous()?,
        })
    }

    /// Frames of features `samples` yield: one per hop, after faster-whisper's one-hop
    /// zero padding at the end.
    pub(crate) fn frames_for(samples: usize) -> usize {
        (samples + HOP) / HOP
    }

    /// The normalised log-mel spectrogram of `samples` (−1..1 floats), shape
    /// `(1, n_mels, frames)` where `frames` is `frames_for(samples)` rounded up to
    /// `min_frames` (and to an even count, as the encoder's stride-2 convolution needs),
    /// the extra frames zero (faster-whisper pads features, not audio).
    pub(crate) fn log_mel(
        &self,
        samples: &[f32],
        min_frames: usize,
    ) -> candle_core::Result<Tensor> {
        // faster-whisper appends one hop of zeros, then the STFT centres its frames
        // (reflect padding of N_FFT/2 on both sides) and the last frame is dropped.
        let padded_len = samples.len() + HOP;
        let half = N_FFT / 2;
        let source = |i: isize| -> f32 {
            // Reflect around the ends of the (zero-extended) signal.
            let len = padded_len as isize;
            let mut j = i;
            if j < 0 {
                j = -j;
            }
            if j >= len {
                j = 2 * (len - 1) - j;
            }
            let j = j.clamp(0, len - 1) as usize;
            samples.get(j).copied().unwrap_or(0.0)
        };
        let frames = Self::frames_for(samples.len());
        let mut framed = vec![0f32; frames * N_FFT];
        for f in 0..frames {
            let start = (f * HOP) as isize - half as isize;
            for n in 0..N_FFT {
                framed[f * N_FFT + n] = source(start + n as isize);
            }
        }
        let framed = Tensor::from_vec(framed, (frames, N_FFT), &Device::Cpu)?;
        let spectrum = framed.matmul(&self.basis)?.sqr()?;
        let power = (spectrum.narrow(1, 0, N_BINS)? + spectrum.narrow(1, N_BINS, N_BINS)?)?;
        let mel = power.matmul(&self.filters_t)?; // (frames, n_mels)
        let log = mel
            .maximum(POWER_FLOOR)?
            .log()?
            .affine(1.0 / std::f64::consts::LN_10, 0.0)?;
        let top = log.max_keepdim(0)?.max_keepdim(1)?.to_dtype(DType::F32)?;
        let top = top.flatten_all()?.to_vec1::<f32>()?[0];
        let log = log.maximum(top - LOG_RANGE)?.affine(0.25, 1.0)?; // (x + 4) / 4
        let log = log.t()?; // (n_mels, frames)
        let mut total = frames.max(min_frames);
        total += total % 2;
        let log = if total > frames {
            let pad = Tensor::zeros((self.n_mels, total - frames), DType::F32, &Device::Cpu)?;
            Tensor::cat(&[&log, &pad], 1)?
        } else {
            log.contiguous()?
        };
        log.unsqueeze(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slaney_scale_round_trips_and_bends_at_1khz() {
        for hz in [0.0, 440.0, 1000.0, 3000.0, 8000.0] {
            assert!((mel_to_hz(hz_to_mel(hz)) - hz).abs() < 1e-6);
        }
        assert!((hz_to_mel(1000.0) - 15.0).abs() < 1e-9);
    }

    #[test]
    fn filters_are_triangles_of_unit_area_in_hz() {
        let f = mel_filters(80, 16_000);
        assert_eq!(f.len(), 80 * N_BINS);
        // Every filter has some weight, none negative; the bank covers 0-8 kHz.
        for m in 0..80 {
            let row = &f[m * N_BINS..(m + 1) * N_BINS];
            assert!(row.iter().all(|&w| w >= 0.0));
            assert!(row.iter().any(|&w| w > 0.0), "filter {m} is empty");
        }
        // Slaney normalisation: the weights of filter m times the bin width (40 Hz) sum to ~1.
        let area: f32 = f[40 * N_BINS..41 * N_BINS].iter().sum::<f32>() * 40.0;
        assert!((area - 1.0).abs() < 0.1, "area {area}");
    }

    #[test]
    fn a_tone_lights_the_band_it_is_in() {
        let front = MelFrontend::new(80, 16_000).unwrap();
        let tone: Vec<f32> = (0..16_000)
            .map(|i| 0.5 * (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / 16_000.0).sin())
            .collect();
        let mel = front.log_mel(&tone, 0).unwrap();
        assert_eq!(mel.dims(), &[1, 80, 102]);
        let frame: Vec<f32> = mel
            .squeeze(0)
            .unwrap()
            .narrow(1, 50, 1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let loudest = frame
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0;
        // 1 kHz is mel 15 of 0..45.2 across 82 points: filter ~26.
        assert!((25..=28).contains(&loudest), "band {loudest}");
        // Normalised: the maximum is (top + 4) / 4 and nothing is below it minus 2.
        let max = frame.iter().cloned().fold(f32::MIN, f32::max);
        assert!(frame.iter().all(|&v| v >= max - 2.0 - 1e-4));
    }
}
