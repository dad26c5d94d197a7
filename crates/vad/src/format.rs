//! The PCM formats the detector accepts.

use std::fmt;

/// Lowest sample rate accepted, in Hz (narrow-band telephony).
pub const MIN_SAMPLE_RATE: u32 = 8_000;

/// Highest sample rate accepted, in Hz. Also bounds one window to 480 frames, which
/// keeps a window's sum of squares far inside `u64`.
pub const MAX_SAMPLE_RATE: u32 = 48_000;

/// Most interleaved channels accepted: Earshot streams are mono or stereo.
pub const MAX_CHANNELS: u16 = 2;

/// A sample rate or channel count the detector does not take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatError {
    /// The sample rate is outside `MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE`.
    SampleRate(u32),
    /// The channel count is outside `1..=MAX_CHANNELS`.
    Channels(u16),
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormatError::SampleRate(rate) => write!(
                f,
                "unsupported sample rate {rate} Hz (accepted: {MIN_SAMPLE_RATE}..={MAX_SAMPLE_RATE})"
            ),
            FormatError::Channels(channels) => {
                write!(f, "unsupported channel count {channels} (accepted: 1..={MAX_CHANNELS})")
            }
        }
    }
}

impl std::error::Error for FormatError {}

/// Checks a format against what the detector takes.
pub(crate) fn validate(sample_rate: u32, channels: u16) -> Result<(), FormatError> {
    if !(MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&sample_rate) {
        return Err(FormatError::SampleRate(sample_rate));
    }
    if !(1..=MAX_CHANNELS).contains(&channels) {
        return Err(FormatError::Channels(channels));
    }
    Ok(())
}
