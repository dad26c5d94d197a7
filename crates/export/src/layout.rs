//! How a segment's text becomes subtitle cues: whitespace collapsed (a blank line would end
//! a cue early in both formats), then words filled greedily into lines of at most
//! [`MAX_LINE_CHARS`], at most [`MAX_CUE_LINES`] lines a cue; a long segment becomes several
//! cues. Lengths count Unicode scalar values, not bytes, so accented and CJK text is not cut
//! short; a word longer than a line is broken inside (there is nowhere better to break it).

/// Characters per subtitle line: the 42 that broadcast and streaming subtitle guidelines
/// (BBC, Netflix) allow, readable at a glance on any screen.
pub const MAX_LINE_CHARS: usize = 42;

/// Lines per cue: two, the same guidelines' maximum; more covers the picture and cannot be
/// read in a cue's time.
pub const MAX_CUE_LINES: usize = 2;

/// The least room a cue's first line keeps for text after a speaker label (SubRip puts the
/// label on that line): a long label must not squeeze the text out.
pub const MIN_LABEL_BUDGET_CHARS: usize = 12;

/// One cue's text: one to [`MAX_CUE_LINES`] non-empty lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cue {
    /// The lines, without line breaks.
    pub lines: Vec<String>,
}

impl Cue {
    /// The characters of text it shows, the weight of its share of the segment's time.
    pub fn chars(&self) -> usize {
        self.lines.iter().map(|l| l.chars().count()).sum()
    }
}

/// `text` on one line: runs of whitespace (line breaks included) become one space, control
/// characters go, the ends are trimmed.
pub fn normalize_text(text: &str) -> String {
    text.split_whitespace()
        .map(|w| w.chars().filter(|c| !c.is_control()).collect::<String>())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The cues of `text`, whose first line of every cue keeps `reserved` characters free for a
/// speaker label. Empty (or whitespace-only) text has no cue.
pub fn cues(text: &str, reserved: usize) -> Vec<Cue> {
    let first_budget = MAX_LINE_CHARS
        .saturating_sub(reserved)
        .max(MIN_LABEL_BUDGET_CHARS);
    let mut fill = Fill {
        first_budget,
        cues: Vec::new(),
        lines: Vec::new(),
        line: String::new(),
        line_chars: 0,
    };
    for word in normalize_text(text).split(' ').filter(|w| !w.is_empty()) {
        fill.word(word);
    }
    fill.finish()
}

/// The greedy fill's state.
struct Fill {
    first_budget: usize,
    cues: Vec<Cue>,
    lines: Vec<String>,
    line: String,
    line_chars: usize,
}

impl Fill {
    fn budget(&self) -> usize {
        if self.lines.is_empty() {
            self.first_budget
        } else {
            MAX_LINE_CHARS
        }
    }

    fn word(&mut self, word: &str) {
        let mut rest = word;
        while !rest.is_empty() {
            let budget = self.budget();
            let chars = rest.chars().count();
            let gap = usize::from(self.line_chars > 0);
            if self.line_chars + gap + chars <= budget {
                if gap == 1 {
                    self.line.push(' ');
                }
                self.line.push_str(rest);
                self.line_chars += gap + chars;
                rest = "";
            } else if self.line_chars > 0 {
                self.end_line();
            } else {
                // Longer than a whole line: break it where the line is full.
                let at = rest.char_indices().nth(budget).map_or(rest.len(), |(i, _)| i);
                self.line.push_str(&rest[..at]);
                self.line_chars = budget;
                rest = &rest[at..];
                self.end_line();
            }
        }
    }

    fn end_line(&mut self) {
        self.lines.push(std::mem::take(&mut self.line));
        self.line_chars = 0;
        if self.lines.len() == MAX_CUE_LINES {
            self.cues.push(Cue {
                lines: std::mem::take(&mut self.lines),
            });
        }
    }

    fn finish(mut self) -> Vec<Cue> {
        if self.line_chars > 0 {
            self.end_line();
        }
        if !self.lines.is_empty() {
            self.cues.push(Cue { lines: self.lines });
        }
        self.cues
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(cues: &[Cue]) -> Vec<Vec<&str>> {
        cues.iter()
            .map(|c| c.lines.iter().map(String::as_str).collect())
            .collect()
    }

    #[test]
    fn whitespace_collapses_and_empty_text_has_no_cue() {
        assert_eq!(normalize_text("  a\n\nb\t c \r\n"), "a b c");
        assert_eq!(normalize_text("x\u{0}y \u{7}"), "xy");
        assert!(cues("", 0).is_empty());
        assert!(cues(" \n\t ", 0).is_empty());
        assert_eq!(texts(&cues("hello\n\nworld", 0)), [["hello world"]]);
    }

    #[test]
    fn long_text_fills_two_lines_a_cue_within_the_line_length() {
        let text = "the quick brown fox jumps over the lazy dog and keeps running far \
                    beyond the hills until the evening comes and the stars rise";
        let out = cues(text, 0);
        assert!(out.len() >= 2, "{out:?}");
        for cue in &out {
            assert!((1..=MAX_CUE_LINES).contains(&cue.lines.len()), "{cue:?}");
            for line in &cue.lines {
                assert!(!line.is_empty() && line.chars().count() <= MAX_LINE_CHARS, "{line:?}");
                assert_eq!(line.trim(), line);
            }
        }
        // Nothing lost, nothing added.
        let joined: Vec<&str> = out.iter().flat_map(|c| c.lines.iter()).map(String::as_str).collect();
        assert_eq!(joined.join(" "), text.split_whitespace().collect::<Vec<_>>().join(" "));
        assert_eq!(
            texts(&cues(text, 0))[0],
            ["the quick brown fox jumps over the lazy", "dog and keeps running far beyond the hills"]
        );
    }

    #[test]
    fn the_reserved_label_room_shrinks_only_each_cues_first_line() {
        let out = cues(&"word ".repeat(30), 8);
        for cue in &out {
            assert!(cue.lines[0].chars().count() <= MAX_LINE_CHARS - 8);
        }
        assert!(out[0].lines[1].chars().count() > MAX_LINE_CHARS - 8);
        // A huge label still leaves the minimum.
        assert_eq!(cues("abcdefghijklmnop", 100)[0].lines[0], "abcdefghijkl");
    }

    #[test]
    fn unicode_counts_characters_and_long_words_break_on_char_boundaries() {
        let word = "é".repeat(50);
        let out = cues(&word, 0);
        assert_eq!(out[0].lines[0].chars().count(), MAX_LINE_CHARS);
        assert_eq!(out[0].lines[1].chars().count(), 8);
        let cjk = "会議の内容を書き起こします。".repeat(4);
        for line in cues(&cjk, 0).iter().flat_map(|c| &c.lines) {
            assert!(line.chars().count() <= MAX_LINE_CHARS);
        }
        assert_eq!(cues("naïve café", 0)[0].chars(), 10);
    }
}
