//! Test-only synthetic PCM and a driver that pushes it through a detector.

use crate::{Vad, VadEvent};

/// A sine of `freq` Hz and peak `amplitude`, starting at phase 0.
pub(crate) fn tone(rate: u32, ms: u32, freq: f64, amplitude: i16) -> Vec<i16> {
    let n = samples(rate, ms);
    (0..n)
        .map(|i| {
            let t = i as f64 / f64::from(rate);
            (f64::from(amplitude) * (2.0 * std::f64::consts::PI * freq * t).sin()).round() as i16
        })
        .collect()
}

/// Digital silence.
pub(crate) fn silence(rate: u32, ms: u32) -> Vec<i16> {
    vec![0; samples(rate, ms)]
}

/// Uniform white noise in `-amplitude..=amplitude` from a 64-bit LCG (Knuth's MMIX
/// constants), so every run sees the same samples.
pub(crate) fn noise(rate: u32, ms: u32, amplitude: i16, seed: u64) -> Vec<i16> {
    let mut x = seed;
    let span = 2 * i64::from(amplitude) + 1;
    (0..samples(rate, ms))
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((x >> 33) as i64 % span - i64::from(amplitude)) as i16
        })
        .collect()
}

/// Interleaves two equally long channels.
pub(crate) fn interleave(left: &[i16], right: &[i16]) -> Vec<i16> {
    left.iter().zip(right).flat_map(|(&l, &r)| [l, r]).collect()
}

/// Little-endian bytes of the samples.
pub(crate) fn to_bytes(samples: &[i16]) -> Vec<u8> {
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

fn samples(rate: u32, ms: u32) -> usize {
    (u64::from(rate) * u64::from(ms) / 1000) as usize
}

/// How to push a stream through a fresh detector.
pub(crate) struct Run {
    rate: u32,
    channels: u16,
    chunk: usize,
    round_trip: bool,
}

/// What came out of a run.
pub(crate) struct Outcome {
    /// Each event with the stream time (ms) after the push, or finish, that returned it.
    pub(crate) emitted: Vec<(u64, VadEvent)>,
    pub(crate) talk_ms: u64,
    pub(crate) stream_ms: u64,
    /// State string after finish().
    pub(crate) state: String,
}

impl Outcome {
    pub(crate) fn events(&self) -> Vec<VadEvent> {
        self.emitted.iter().map(|(_, e)| *e).collect()
    }
}

impl Run {
    pub(crate) fn new(rate: u32, channels: u16) -> Self {
        Run {
            rate,
            channels,
            chunk: usize::MAX,
            round_trip: false,
        }
    }

    pub(crate) fn mono16k() -> Self {
        Run::new(16_000, 1)
    }

    /// Pushes in chunks of this many bytes.
    pub(crate) fn chunks(mut self, bytes: usize) -> Self {
        self.chunk = bytes;
        self
    }

    /// Rebuilds the detector from its state string after every push.
    pub(crate) fn round_trip(mut self, on: bool) -> Self {
        self.round_trip = on;
        self
    }

    pub(crate) fn go(&self, audio: &[u8]) -> Outcome {
        let mut vad = Vad::new(self.rate, self.channels).unwrap();
        let mut emitted = Vec::new();
        for chunk in audio.chunks(self.chunk) {
            for event in vad.push(chunk) {
                emitted.push((vad.stream_ms(), event));
            }
            if self.round_trip {
                let state = vad.to_state_string();
                vad = Vad::from_state_string(&state, self.rate, self.channels).unwrap();
            }
        }
        for event in vad.finish() {
            emitted.push((vad.stream_ms(), event));
        }
        Outcome {
            emitted,
            talk_ms: vad.talk_ms(),
            stream_ms: vad.stream_ms(),
            state: vad.to_state_string(),
        }
    }
}
