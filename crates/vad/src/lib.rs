//! Talk-time analytics for Earshot's PCM streams: an energy-based voice-activity
//! detector per source ([`Vad`]) and meeting-level statistics over the resulting speech
//! intervals ([`talk_stats`]).
//!
//! Built to run inside a stateless wasm component that sees one batch of PCM per
//! request: the crate is std-only, uses integer arithmetic throughout (every platform
//! makes the same decisions), and the whole detector state round-trips through a short
//! ASCII string ([`Vad::to_state_string`], under [`MAX_STATE_LEN`] bytes) that fits in an
//! HTTP header.
//!
//! # Algorithm
//!
//! Input is 16-bit little-endian PCM, mono or interleaved stereo, 8–48 kHz. Channels
//! are averaged into one signal, which is cut into [`ANALYSIS_WINDOW_MS`] windows on a
//! grid counted from the first sample. Each window gets two measures:
//!
//! - its **level**, the mean power in dBFS (RMS relative to 16-bit full scale),
//!   computed with a fixed-point log2;
//! - its **zero-crossing rate** (ZCR), the share of adjacent samples that change sign.
//!
//! A window is *speech* when its level is at least [`ABSOLUTE_FLOOR_DBFS`], at least
//! [`SPEECH_MARGIN_DB`] above the adaptive noise floor, and its ZCR is at most
//! [`ZCR_CEILING_PER_MILLE`] (white noise crosses on about half the pairs, voiced speech
//! and tones far fewer). The noise floor starts at [`INITIAL_NOISE_FLOOR_DBFS`] and is
//! moved only by non-speech windows, towards their level, by at most
//! [`NOISE_FLOOR_RISE_DB_PER_S`] upwards and [`NOISE_FLOOR_FALL_DB_PER_S`] downwards per
//! second of audio.
//!
//! Hysteresis turns windows into segments: a segment starts once speech windows add up
//! to [`SPEECH_START_MS`] without a break, dated at the first of them; it ends once
//! non-speech windows add up to [`HANGOVER_MS`] without a break, dated at the end of
//! the last speech window. Talk time is the sum of segment lengths, so pauses shorter
//! than the hangover count as talk, and isolated bursts shorter than the start time do
//! not.
//!
//! Time is kept by counting sample frames, so it is exact whatever the chunking. A
//! window or a sample frame cut by the end of a push is completed by the next one:
//! instead of samples the state carries the open window's running sums (frames, sum of
//! squares, zero crossings, last sign) and at most three bytes of a split frame. The
//! same audio therefore yields the same events however the relay batches it, with or
//! without a state round trip between pushes. Events are reported when the window that
//! confirms them completes: a start [`SPEECH_START_MS`] after it happened, an end
//! [`HANGOVER_MS`] after (plus up to one window and the batching delay).
//!
//! # Limits
//!
//! - It measures *voice activity by energy*, not who speaks: it cannot tell two people
//!   on one microphone apart, and speaker bleed (the microphone picking up the
//!   loudspeakers) counts as talk on both sources.
//! - Loud sounds with a speech-like spectrum — music, babble, a TV — count as speech;
//!   only broadband, white-ish noise is rejected by the ZCR ceiling. Coloured noise
//!   (low ZCR) louder than the threshold also counts.
//! - The floor learns only from non-speech windows, so a steady low-ZCR noise that
//!   appears already above the threshold (a hum 10 dB above the learnt floor) is taken
//!   for continuous speech and never learnt; noise that rises gradually is learnt.
//! - Whispers and unvoiced consonants exceed the ZCR ceiling and count only when the
//!   hangover bridges them inside voiced speech.
//! - Averaging stereo channels cancels content in antiphase between them.
//! - In the first second of a quiet stream the threshold is -40 dBFS, not the absolute
//!   floor, until the noise floor has fallen: very quiet talkers may start late.

mod detector;
mod format;
mod level;
mod state;
mod stats;
#[cfg(test)]
mod synth;
mod thresholds;

pub use detector::{Vad, VadEvent};
pub use format::{FormatError, MAX_CHANNELS, MAX_SAMPLE_RATE, MIN_SAMPLE_RATE};
pub use state::{VadStateError, MAX_STATE_LEN};
pub use stats::{merge_intervals, talk_stats, TalkStats};
pub use thresholds::{
    ABSOLUTE_FLOOR_DBFS, ANALYSIS_WINDOW_MS, HANGOVER_MS, INITIAL_NOISE_FLOOR_DBFS,
    NOISE_FLOOR_FALL_DB_PER_S, NOISE_FLOOR_RISE_DB_PER_S, SILENCE_LEVEL_DBFS, SPEECH_MARGIN_DB,
    SPEECH_START_MS, ZCR_CEILING_PER_MILLE,
};
