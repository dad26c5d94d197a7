//! Subtitle timestamps: `HH:MM:SS,mmm` (SubRip) and `HH:MM:SS.mmm` (WebVTT). Hours keep
//! growing past 99 rather than wrapping (both formats allow more digits).

/// What separates seconds from milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeSeparator {
    /// SubRip's `,`.
    Comma,
    /// WebVTT's `.`.
    Dot,
}

/// `ms` milliseconds as `HH:MM:SS<sep>mmm`.
pub fn timecode(ms: u64, sep: TimeSeparator) -> String {
    let (hours, rest) = (ms / 3_600_000, ms % 3_600_000);
    let (minutes, rest) = (rest / 60_000, rest % 60_000);
    let (seconds, millis) = (rest / 1_000, rest % 1_000);
    let sep = match sep {
        TimeSeparator::Comma => ',',
        TimeSeparator::Dot => '.',
    };
    format!("{hours:02}:{minutes:02}:{seconds:02}{sep}{millis:03}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_carry_at_their_bounds() {
        assert_eq!(timecode(0, TimeSeparator::Comma), "00:00:00,000");
        assert_eq!(timecode(999, TimeSeparator::Dot), "00:00:00.999");
        assert_eq!(timecode(1_000, TimeSeparator::Dot), "00:00:01.000");
        assert_eq!(timecode(59_999, TimeSeparator::Comma), "00:00:59,999");
        assert_eq!(timecode(60_000, TimeSeparator::Comma), "00:01:00,000");
        assert_eq!(timecode(3_599_999, TimeSeparator::Comma), "00:59:59,999");
        assert_eq!(timecode(3_600_000, TimeSeparator::Comma), "01:00:00,000");
        assert_eq!(timecode(100 * 3_600_000 + 1, TimeSeparator::Dot), "100:00:00.001");
        assert!(timecode(u64::MAX, TimeSeparator::Dot).ends_with(".615"));
    }
}
