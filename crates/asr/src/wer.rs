//! Word error rate, for tests and benchmarks: word-level Levenshtein distance after
//! normalising case and punctuation.

/// The words of `text`, lower-cased, punctuation removed (apostrophes inside words kept,
/// hyphens split words), so "Hello, world!" and "hello world" compare equal.
pub fn normalise(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| c.is_whitespace() || c == '-')
        .map(|w| {
            w.chars()
                .filter(|c| c.is_alphanumeric() || *c == '\'')
                .collect::<String>()
        })
        .map(|w| w.trim_matches('\'').to_string())
        .filter(|w| !w.is_empty())
        .collect()
}

/// Word-level edit distance (substitutions + insertions + deletions) between two texts.
pub fn word_errors(reference: &str, hypothesis: &str) -> usize {
    let r = normalise(reference);
    let h = normalise(hypothesis);
    let mut prev: Vec<usize> = (0..=h.len()).collect();
    for (i, rw) in r.iter().enumerate() {
        let mut row = vec![i + 1; h.len() + 1];
        for (j, hw) in h.iter().enumerate() {
            let substitute = prev[j] + usize::from(rw != hw);
            row[j + 1] = substitute.min(prev[j + 1] + 1).min(row[j] + 1);
        }
        prev = row;
    }
    prev[h.len()]
}

/// Word error rate of `hypothesis` against `reference`: errors ÷ reference words
/// (1.0 for a non-empty hypothesis of an empty reference).
pub fn wer(reference: &str, hypothesis: &str) -> f64 {
    let words = normalise(reference).len();
    let errors = word_errors(reference, hypothesis);
    if words == 0 {
        return if errors == 0 { 0.0 } else { 1.0 };
    }
    errors as f64 / words as f64
}

/// Word error rate over a set of `(reference, hypothesis)` pairs: total errors ÷ total
/// reference words (the usual corpus WER, not a mean of per-sentence rates).
pub fn corpus_wer<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> f64 {
    let (mut errors, mut words) = (0usize, 0usize);
    for (r, h) in pairs {
        errors += word_errors(r, h);
        words += normalise(r).len();
    }
    if words == 0 {
        0.0
    } else {
        errors as f64 / words as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignores_case_and_punctuation() {
        assert_eq!(wer("Hello, world!", "hello world"), 0.0);
        assert_eq!(
            normalise("It's a well-known fact."),
            ["it's", "a", "well", "known", "fact"]
        );
    }

    #[test]
    fn counts_each_kind_of_error() {
        assert_eq!(word_errors("a b c", "a x c"), 1);
        assert_eq!(word_errors("a b c", "a c"), 1);
        assert_eq!(word_errors("a b c", "a b c d"), 1);
        assert_eq!(word_errors("a b c", ""), 3);
        assert!((wer("one two three four", "one too three") - 0.5).abs() < 1e-9);
    }

    #[test]
    fn corpus_rate_weights_by_length() {
        let rate = corpus_wer([("a b c d", "a b c d"), ("e f", "x")]);
        assert!((rate - 2.0 / 6.0).abs() < 1e-9);
    }
}
