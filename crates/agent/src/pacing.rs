//! How audio is cut into frames and when each frame is due: real time divided by a
//! speed, measured from the samples sent (not from a tick), so a late frame is caught up
//! at once and the stream never drifts.

use std::io::Read;
use std::time::Duration;

use crate::error::AgentError;
use crate::wav::{self, PcmFormat};

use earshot_protocol::limits::DEFAULT_IDLE_TIMEOUT_MS;

/// Longest frame duration, ms: the protocol's frames are 20–100 ms; a second is plenty.
pub const MAX_FRAME_MS: u32 = 1_000;
/// Keepalive after this long without sending: a third of the server's idle timeout, so
/// a stalled input (a paused pipe, a slow speed) never gets the stream closed as idle.
pub const KEEPALIVE_AFTER: Duration = Duration::from_millis(DEFAULT_IDLE_TIMEOUT_MS / 3);

/// How frames are cut and paced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pacing {
    /// 1 is real time, 2 twice as fast, 0 as fast as possible.
    pub speed: f64,
    /// Audio per binary frame, ms (capped by the server's `max_frame_bytes`).
    pub frame_ms: u32,
    /// Keepalive after this long without sending ([`KEEPALIVE_AFTER`] by default).
    pub keepalive_after: Duration,
}

/// Why a [`Pacing`] was refused.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum PacingError {
    /// Negative, NaN or infinite.
    #[error("speed must be 0 (as fast as possible) or a positive number, not {0}")]
    Speed(f64),
    /// Outside `1..=MAX_FRAME_MS`.
    #[error("frame duration must be 1..={MAX_FRAME_MS} ms, not {0}")]
    FrameMs(u32),
}

impl Pacing {
    /// Checks `speed` and `frame_ms`.
    pub fn new(speed: f64, frame_ms: u32) -> Result<Self, PacingError> {
        if !(speed.is_finite() && speed >= 0.0) {
            return Err(PacingError::Speed(speed));
        }
        if !(1..=MAX_FRAME_MS).contains(&frame_ms) {
            return Err(PacingError::FrameMs(frame_ms));
        }
        Ok(Pacing { speed, frame_ms, keepalive_after: KEEPALIVE_AFTER })
    }

    /// When the frame starting at sample frame `samples_sent` is due, after the start.
    pub fn due_after(self, samples_sent: u64, sample_rate: u32) -> Duration {
        if self.speed == 0.0 {
            return Duration::ZERO;
        }
        Duration::try_from_secs_f64(samples_sent as f64 / f64::from(sample_rate) / self.speed).unwrap_or(Duration::MAX)
    }
}

/// Bytes per binary frame: `frame_ms` of audio in whole sample frames, at most
/// `max_frame_bytes` (the server's limit) and at least one sample frame.
pub fn frame_bytes(format: PcmFormat, frame_ms: u32, max_frame_bytes: usize) -> Result<usize, AgentError> {
    let align = format.block_align();
    let largest = max_frame_bytes - max_frame_bytes % align;
    if largest == 0 {
        return Err(AgentError::FrameLimitTooSmall { max_frame_bytes, block_align: align });
    }
    let samples = (u64::from(format.sample_rate) * u64::from(frame_ms) / 1000).max(1);
    let wanted = usize::try_from(samples).unwrap_or(usize::MAX).saturating_mul(align);
    Ok(wanted.min(largest))
}

/// The next frame of at most `frame_bytes`, in whole sample frames; `None` at the end (a
/// trailing partial sample frame is dropped: it is not audio).
pub fn read_frame(input: &mut impl Read, frame_bytes: usize, block_align: usize) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; frame_bytes];
    let n = wav::read_up_to(input, &mut buf)?;
    let whole = n - n % block_align;
    if whole == 0 {
        return Ok(None);
    }
    buf.truncate(whole);
    Ok(Some(buf))
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    const MONO_16K: PcmFormat = PcmFormat::MONO_16K;

    #[test]
    fn frames_are_whole_sample_frames_within_the_server_limit() {
        assert_eq!(frame_bytes(MONO_16K, 20, 65_536).unwrap(), 640);
        let stereo_44k = PcmFormat { sample_rate: 44_100, channels: 2 };
        assert_eq!(frame_bytes(stereo_44k, 20, 65_536).unwrap(), 882 * 4);
        // Capped by max_frame_bytes, rounded down to whole sample frames.
        assert_eq!(frame_bytes(stereo_44k, 1000, 1_001).unwrap(), 1_000);
        // Never below one sample frame, never above the server's limit.
        assert_eq!(frame_bytes(PcmFormat { sample_rate: 8_000, channels: 1 }, 1, 65_536).unwrap(), 16);
        assert!(matches!(
            frame_bytes(stereo_44k, 20, 3),
            Err(AgentError::FrameLimitTooSmall { max_frame_bytes: 3, block_align: 4 })
        ));
    }

    #[test]
    fn pacing_follows_the_samples_sent() {
        let at = |speed| Pacing::new(speed, 20).unwrap();
        assert_eq!(at(1.0).due_after(16_000, 16_000), Duration::from_secs(1));
        assert_eq!(at(2.0).due_after(16_000, 16_000), Duration::from_millis(500));
        assert_eq!(at(0.0).due_after(16_000, 16_000), Duration::ZERO);
        assert_eq!(at(1.0).due_after(0, 16_000), Duration::ZERO);
        // A very slow speed saturates instead of panicking.
        assert_eq!(at(1e-300).due_after(u64::MAX, 8_000), Duration::MAX);
    }

    #[test]
    fn pacing_refuses_what_cannot_be_paced() {
        for speed in [-1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(Pacing::new(speed, 20), Err(PacingError::Speed(_))), "{speed}");
        }
        assert_eq!(Pacing::new(1.0, 0), Err(PacingError::FrameMs(0)));
        assert_eq!(Pacing::new(1.0, MAX_FRAME_MS + 1), Err(PacingError::FrameMs(MAX_FRAME_MS + 1)));
        assert!(Pacing::new(0.0, MAX_FRAME_MS).is_ok());
    }

    #[test]
    fn reading_frames_drops_a_trailing_partial_sample() {
        let mut input = Cursor::new(vec![7u8; 1_001]);
        let mut sizes = Vec::new();
        while let Some(f) = read_frame(&mut input, 640, 2).unwrap() {
            sizes.push(f.len());
        }
        assert_eq!(sizes, [640, 360]);
    }
}
