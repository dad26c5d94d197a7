//! From history order to time order, in bounded memory. The transcript stream holds finals
//! in arrival order; each source's finals arrive in their own time order (one worker per
//! source, in sequence), but the two sources interleave with a few seconds of lag between
//! them, and subtitles need non-decreasing start times (WebVTT requires them). A window of
//! the [`REORDER_WINDOW`] earliest pending segments puts them in start order as long as no
//! segment arrives more than that many segments late, which is far beyond any real lag.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Segments held back to be put in start order: 1,000 finals are many minutes of two
/// sources talking (a final is a phrase), and at most ~5 MB even if every one held the
/// longest text the intake accepts (4 KiB; typically the window holds ~200 KB).
pub const REORDER_WINDOW: usize = 1_000;

/// A sorting window over items keyed by `(start_ms, end_ms)`; ties keep arrival order.
#[derive(Debug)]
pub struct Reorder<T> {
    window: usize,
    heap: BinaryHeap<Reverse<Entry<T>>>,
    arrived: u64,
}

#[derive(Debug)]
struct Entry<T> {
    key: (u64, u64, u64),
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key.cmp(&other.key)
    }
}

impl<T> Reorder<T> {
    /// A window holding at most `window` items (at least one).
    pub fn new(window: usize) -> Self {
        Reorder {
            window: window.max(1),
            heap: BinaryHeap::new(),
            arrived: 0,
        }
    }

    /// Takes in the next item of history; the earliest pending one once the window is full.
    pub fn push(&mut self, start_ms: u64, end_ms: u64, item: T) -> Option<T> {
        self.heap.push(Reverse(Entry {
            key: (start_ms, end_ms, self.arrived),
            item,
        }));
        self.arrived += 1;
        if self.heap.len() > self.window {
            self.heap.pop().map(|Reverse(e)| e.item)
        } else {
            None
        }
    }

    /// The earliest pending item, once history is exhausted (call until `None`).
    pub fn pop(&mut self) -> Option<T> {
        self.heap.pop().map(|Reverse(e)| e.item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(window: usize, items: &[(u64, u64, &'static str)]) -> Vec<&'static str> {
        let mut r = Reorder::new(window);
        let mut out: Vec<_> = items.iter().filter_map(|&(s, e, x)| r.push(s, e, x)).collect();
        while let Some(x) = r.pop() {
            out.push(x);
        }
        out
    }

    #[test]
    fn interleaved_sources_come_out_by_start_then_end_then_arrival() {
        let items = [(0, 900, "mic1"), (2_000, 2_500, "mic2"), (500, 1_800, "sys1"), (2_000, 2_400, "sys2"), (2_000, 2_400, "sys3")];
        assert_eq!(run(REORDER_WINDOW, &items), ["mic1", "sys1", "sys2", "sys3", "mic2"]);
    }

    #[test]
    fn a_full_window_releases_its_earliest_and_stays_bounded() {
        let mut r = Reorder::new(2);
        assert_eq!(r.push(30, 30, 'c'), None);
        assert_eq!(r.push(10, 10, 'a'), None);
        assert_eq!(r.push(20, 20, 'b'), Some('a'));
        assert_eq!(r.heap.len(), 2);
        // Later than the window can repair: out of order, but nothing is lost.
        assert_eq!(run(1, &[(5, 5, "late"), (6, 6, "next"), (1, 1, "early")]), ["late", "early", "next"]);
        assert!(run(3, &[]).is_empty());
    }
}
