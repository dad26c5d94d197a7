//! Meeting-level talk statistics: per-source talk time, cross-talk and silence over a
//! window, from speech intervals on a common clock. Pure functions over half-open
//! intervals `[start_ms, end_ms)`.

/// Talk statistics of a meeting over a window `[from_ms, to_ms)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TalkStats<L> {
    /// Each source's talk time inside the window, in milliseconds, in input order. A
    /// source's own overlapping intervals are counted once.
    pub talk_ms_per_source: Vec<(L, u64)>,
    /// Time at least two sources speak at once, in milliseconds.
    pub overlap_ms: u64,
    /// Time no source speaks, in milliseconds.
    pub silence_ms: u64,
    /// Length of the window, in milliseconds (0 if `to_ms <= from_ms`).
    pub span_ms: u64,
}

impl<L> TalkStats<L> {
    /// Time at least one source speaks, in milliseconds.
    pub fn speaking_ms(&self) -> u64 {
        self.span_ms - self.silence_ms
    }
}

/// Sorts intervals and merges those that overlap or touch. Empty and inverted
/// intervals (`end_ms <= start_ms`) are dropped.
pub fn merge_intervals<I>(intervals: I) -> Vec<(u64, u64)>
where
    I: IntoIterator<Item = (u64, u64)>,
{
    let mut sorted: Vec<(u64, u64)> = intervals.into_iter().filter(|(s, e)| s < e).collect();
    sorted.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(sorted.len());
    for (start, end) in sorted {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged
}

/// Computes talk statistics over `[from_ms, to_ms)` from each source's speech
/// intervals `(start_ms, end_ms)` on a common clock (e.g. wall-clock milliseconds).
///
/// Intervals may come unsorted, overlapping, nested or reaching outside the window:
/// each source's are merged and clipped first. Entries are separate sources even if
/// their labels are equal.
pub fn talk_stats<L, S, I>(sources: S, from_ms: u64, to_ms: u64) -> TalkStats<L>
where
    S: IntoIterator<Item = (L, I)>,
    I: IntoIterator<Item = (u64, u64)>,
{
    let to_ms = to_ms.max(from_ms);
    let clip = |(s, e): (u64, u64)| (s.max(from_ms), e.min(to_ms));
    let mut talk_ms_per_source = Vec::new();
    // +1 where a source starts speaking, -1 where it stops.
    let mut edges: Vec<(u64, i32)> = Vec::new();
    for (label, intervals) in sources {
        let merged = merge_intervals(intervals.into_iter().map(clip));
        talk_ms_per_source.push((label, merged.iter().map(|(s, e)| e - s).sum()));
        edges.extend(merged.iter().flat_map(|&(s, e)| [(s, 1), (e, -1)]));
    }
    edges.sort_unstable();

    let (mut overlap_ms, mut silence_ms) = (0, 0);
    let (mut active, mut prev) = (0i32, from_ms);
    for (t, delta) in edges {
        match active {
            0 => silence_ms += t - prev,
            1 => {}
            _ => overlap_ms += t - prev,
        }
        active += delta;
        prev = t;
    }
    silence_ms += to_ms - prev;
    TalkStats {
        talk_ms_per_source,
        overlap_ms,
        silence_ms,
        span_ms: to_ms - from_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_sorts_merges_and_drops_empty() {
        let merged = merge_intervals([
            (50, 60),
            (0, 10),
            (5, 20),
            (20, 30),
            (7, 8),
            (40, 40),
            (45, 41),
        ]);
        assert_eq!(merged, vec![(0, 30), (50, 60)]);
        assert_eq!(merge_intervals([]), vec![]);
    }

    #[test]
    fn two_speakers_with_cross_talk() {
        // mic: 0–4 s and 6–8 s; sys: 3–7 s. Window 0–10 s.
        let stats = talk_stats(
            [
                ("mic", vec![(6_000, 8_000), (0, 4_000)]),
                ("sys", vec![(3_000, 7_000)]),
            ],
            0,
            10_000,
        );
        assert_eq!(
            stats.talk_ms_per_source,
            vec![("mic", 6_000), ("sys", 4_000)]
        );
        assert_eq!(stats.overlap_ms, 2_000); // 3–4 s and 6–7 s
        assert_eq!(stats.silence_ms, 2_000); // 8–10 s
        assert_eq!(stats.span_ms, 10_000);
        assert_eq!(stats.speaking_ms(), 8_000);
    }

    #[test]
    fn nested_and_duplicate_intervals_of_one_source_are_not_overlap() {
        let stats = talk_stats(
            [("a", vec![(100, 900), (200, 300), (100, 900), (850, 1000)])],
            0,
            1_000,
        );
        assert_eq!(stats.talk_ms_per_source, vec![("a", 900)]);
        assert_eq!(stats.overlap_ms, 0);
        assert_eq!(stats.silence_ms, 100);
    }

    #[test]
    fn three_sources_nested_and_clipped_to_the_window() {
        let stats = talk_stats(
            [
                ("a", vec![(0, 100)]),
                ("b", vec![(80, 90), (20, 30)]),    // nested in a
                ("c", vec![(90, 300), (250, 200)]), // reaches past the window; one inverted
            ],
            10,
            150,
        );
        assert_eq!(
            stats.talk_ms_per_source,
            vec![("a", 90), ("b", 20), ("c", 60)]
        );
        // overlap: 20–30 (a,b), 80–90 (a,b), 90–100 (a,c)
        assert_eq!(stats.overlap_ms, 30);
        assert_eq!(stats.silence_ms, 0);
        assert_eq!(stats.span_ms, 140);
    }

    #[test]
    fn touching_intervals_do_not_overlap_and_empty_window_is_zero() {
        let stats = talk_stats([("a", vec![(0, 50)]), ("b", vec![(50, 100)])], 0, 200);
        assert_eq!(stats.overlap_ms, 0);
        assert_eq!(stats.silence_ms, 100);
        let empty = talk_stats([("a", vec![(0, 50)])], 300, 100);
        assert_eq!(
            empty,
            TalkStats {
                talk_ms_per_source: vec![("a", 0)],
                overlap_ms: 0,
                silence_ms: 0,
                span_ms: 0
            }
        );
        let nobody = talk_stats(Vec::<(&str, Vec<(u64, u64)>)>::new(), 0, 500);
        assert_eq!((nobody.silence_ms, nobody.overlap_ms), (500, 0));
    }
}
