//! One analysis window's statistics, accumulated sample by sample, and its level in
//! integer millidecibels (no floating point, so every platform decides alike).

use crate::thresholds::SILENCE_LEVEL_DBFS;

/// Millidecibels per unit of log2 in Q16: 10·log10(2)·1000 / 65536, as 30103 / 655360.
const MDB_PER_LOG2_NUM: i64 = 30_103;
const MDB_PER_LOG2_DEN: i64 = 655_360;

/// Running statistics of the current, possibly incomplete, analysis window. Small and
/// exact, so a window can straddle two pushes by persisting this instead of samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct WindowAccumulator {
    /// Frames (downmixed samples) in the window so far.
    pub(crate) frames: u32,
    /// Sum of the squared downmixed samples.
    pub(crate) sum_sq: u64,
    /// Sign changes between adjacent samples of this window.
    pub(crate) crossings: u32,
    /// Whether the last sample was negative (meaningful only when `frames > 0`).
    pub(crate) prev_negative: bool,
}

impl WindowAccumulator {
    /// Adds one downmixed sample.
    pub(crate) fn add(&mut self, sample: i32) {
        let negative = sample < 0;
        if self.frames > 0 && negative != self.prev_negative {
            self.crossings += 1;
        }
        self.prev_negative = negative;
        let magnitude = u64::from(sample.unsigned_abs());
        self.sum_sq += magnitude * magnitude;
        self.frames += 1;
    }

    /// Mean power of the window, in millidecibels relative to full scale, clamped below
    /// at `SILENCE_LEVEL_DBFS`.
    pub(crate) fn level_mdbfs(&self) -> i32 {
        let floor = SILENCE_LEVEL_DBFS * 1000;
        if self.sum_sq == 0 || self.frames == 0 {
            return floor;
        }
        // log2(sum_sq / frames / 2^30): 2^30 = 32768², the power of full scale.
        let log2 = log2_q16(self.sum_sq) - log2_q16(u64::from(self.frames)) - (30 << 16);
        let mdb = (log2 * MDB_PER_LOG2_NUM).div_euclid(MDB_PER_LOG2_DEN);
        i32::try_from(mdb).unwrap_or(floor).max(floor)
    }

    /// Whether the zero-crossing rate is at most `ceiling` per 1000 adjacent pairs. A
    /// one-sample window has no pairs and passes.
    pub(crate) fn zcr_at_most(&self, ceiling_per_mille: u32) -> bool {
        let pairs = u64::from(self.frames.saturating_sub(1));
        u64::from(self.crossings) * 1000 <= u64::from(ceiling_per_mille) * pairs
    }
}

/// log2(x) in Q16 fixed point (16 fractional bits), for x > 0; 0 for x = 0. Exact to
/// within 2^-16, by repeated squaring of the normalised mantissa.
pub(crate) fn log2_q16(x: u64) -> i64 {
    if x == 0 {
        return 0;
    }
    let int = 63 - i64::from(x.leading_zeros());
    // Mantissa in Q31, in [2^31, 2^32): its square fits in u64.
    let mut m = if int >= 31 {
        x >> (int - 31)
    } else {
        x << (31 - int)
    };
    let mut frac = 0i64;
    for bit in (0..16).rev() {
        m = (m * m) >> 31;
        if m >= 1 << 32 {
            m >>= 1;
            frac |= 1 << bit;
        }
    }
    (int << 16) | frac
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log2_is_exact_on_powers_of_two_and_close_elsewhere() {
        for k in 0..63 {
            assert_eq!(log2_q16(1 << k), k << 16);
        }
        for x in [3u64, 10, 1000, 123_456_789, u64::MAX] {
            let want = (x as f64).log2() * 65536.0;
            assert!((log2_q16(x) as f64 - want).abs() <= 2.0, "x={x}");
        }
    }

    fn window(samples: &[i32]) -> WindowAccumulator {
        let mut w = WindowAccumulator::default();
        samples.iter().for_each(|&s| w.add(s));
        w
    }

    #[test]
    fn level_is_relative_to_full_scale() {
        assert_eq!(window(&[-32768; 160]).level_mdbfs(), 0);
        // Half amplitude is -6.02 dB.
        let half = window(&[16384; 160]).level_mdbfs();
        assert!((-6022..=-6018).contains(&half), "{half}");
        assert_eq!(window(&[0; 160]).level_mdbfs(), SILENCE_LEVEL_DBFS * 1000);
        // The quietest non-zero 48 kHz window still sits above the silence level.
        let mut quiet = vec![0; 480];
        quiet[0] = 1;
        assert!(window(&quiet).level_mdbfs() > SILENCE_LEVEL_DBFS * 1000);
    }

    #[test]
    fn zero_crossings_count_sign_changes() {
        let w = window(&[1, -1, 1, -1, 0, 5]);
        assert_eq!(w.crossings, 4);
        assert!(w.zcr_at_most(800));
        assert!(!w.zcr_at_most(799));
        assert!(window(&[7]).zcr_at_most(0));
    }
}
