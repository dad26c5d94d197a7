//! Numbers into tables: one value per repeated run, shown as min / median / max, one
//! Markdown table per scenario with a ratio column and the target.

use std::fmt::Write as _;

/// Which direction is an improvement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Better {
    /// More is better (throughput).
    Higher,
    /// Less is better (latency, memory, CPU).
    Lower,
}

/// A goal from the issue, reported against, never asserted.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The bound.
    pub(crate) value: f64,
    /// `Higher`: at least `value`; `Lower`: at most `value`.
    pub(crate) kind: Better,
}

impl Target {
    pub(crate) fn at_least(value: f64) -> Option<Self> {
        Some(Target {
            value,
            kind: Better::Higher,
        })
    }

    pub(crate) fn at_most(value: f64) -> Option<Self> {
        Some(Target {
            value,
            kind: Better::Lower,
        })
    }

    fn met(&self, v: f64) -> bool {
        match self.kind {
            Better::Higher => v >= self.value,
            Better::Lower => v <= self.value,
        }
    }

    fn text(&self) -> String {
        match self.kind {
            Better::Higher => format!("≥ {}", num(self.value)),
            Better::Lower => format!("≤ {}", num(self.value)),
        }
    }
}

/// One value per repeated run.
#[derive(Debug, Clone, Default)]
pub(crate) struct Runs(pub(crate) Vec<f64>);

impl Runs {
    pub(crate) fn push(&mut self, v: f64) {
        self.0.push(v);
    }

    fn sorted(&self) -> Vec<f64> {
        let mut v: Vec<f64> = self.0.iter().copied().filter(|x| x.is_finite()).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v
    }

    /// The median run (the lower middle one for an even count), if any.
    pub(crate) fn median(&self) -> Option<f64> {
        let v = self.sorted();
        (!v.is_empty()).then(|| v[(v.len() - 1) / 2])
    }

    fn cell(&self) -> String {
        let v = self.sorted();
        match v.len() {
            0 => "—".into(),
            1 => num(v[0]),
            n => format!(
                "{} / **{}** / {}",
                num(v[0]),
                num(v[(n - 1) / 2]),
                num(v[n - 1])
            ),
        }
    }
}

/// A number for a table: thousands separated when large, a few significant digits when small.
pub(crate) fn num(v: f64) -> String {
    if !v.is_finite() {
        return "—".into();
    }
    let a = v.abs();
    if a >= 1000.0 {
        let s = format!("{:.0}", a);
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        if v < 0.0 {
            out.insert(0, '-');
        }
        out
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// One metric across the systems measured.
pub(crate) struct Row {
    pub(crate) metric: String,
    pub(crate) better: Better,
    pub(crate) values: Vec<Runs>,
    pub(crate) target: Option<Target>,
}

/// One scenario's table.
pub(crate) struct Table {
    pub(crate) title: String,
    /// What exactly is measured, printed above the table.
    pub(crate) setup: Vec<String>,
    pub(crate) columns: Vec<String>,
    pub(crate) rows: Vec<Row>,
    /// Notes printed under the table (anomalies, errors seen).
    pub(crate) notes: Vec<String>,
}

impl Table {
    pub(crate) fn new(title: impl Into<String>, columns: &[&str]) -> Self {
        Table {
            title: title.into(),
            setup: Vec::new(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Adds a row; `values` has one `Runs` per column.
    pub(crate) fn row(
        &mut self,
        metric: &str,
        better: Better,
        values: Vec<Runs>,
        target: Option<Target>,
    ) {
        self.rows.push(Row {
            metric: metric.into(),
            better,
            values,
            target,
        });
    }

    /// The Markdown text: title, setup lines, the table (a ratio column when there are
    /// two systems), then notes.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "### {}\n", self.title);
        for s in &self.setup {
            let _ = writeln!(out, "{s}  ");
        }
        if !self.setup.is_empty() {
            out.push('\n');
        }
        let two = self.columns.len() == 2;
        let mut header = vec!["metric".to_owned()];
        header.extend(
            self.columns
                .iter()
                .map(|c| format!("{c} (min / **median** / max)")),
        );
        if two {
            header.push(format!("{}/{}", self.columns[0], self.columns[1]));
        }
        let has_target = self.rows.iter().any(|r| r.target.is_some());
        if has_target {
            header.push("target".into());
            header.push(format!("{} meets", self.columns[0]));
        }
        let _ = writeln!(out, "| {} |", header.join(" | "));
        let _ = writeln!(
            out,
            "|{}",
            header.iter().map(|_| "---|").collect::<String>()
        );
        for r in &self.rows {
            let mut cells = vec![r.metric.clone()];
            cells.extend(r.values.iter().map(Runs::cell));
            if two {
                cells.push(match (r.values[0].median(), r.values[1].median()) {
                    (Some(a), Some(b)) if b != 0.0 => {
                        let ratio = a / b;
                        let better = match r.better {
                            Better::Higher => ratio > 1.0,
                            Better::Lower => ratio < 1.0,
                        };
                        let digits = if ratio < 0.01 { 4 } else { 2 };
                        let word = if better { "better" } else { "worse" };
                        format!("{ratio:.digits$}× ({word})")
                    }
                    _ => "—".into(),
                });
            }
            if has_target {
                match &r.target {
                    Some(t) => {
                        cells.push(t.text());
                        cells.push(match r.values[0].median() {
                            Some(v) if t.met(v) => "yes".into(),
                            Some(_) => "**no**".into(),
                            None => "—".into(),
                        });
                    }
                    None => {
                        cells.push(String::new());
                        cells.push(String::new());
                    }
                }
            }
            let _ = writeln!(out, "| {} |", cells.join(" | "));
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for n in &self.notes {
                let _ = writeln!(out, "- {n}");
            }
        }
        out
    }
}

/// Nearest-rank percentile `p` (0–100) of sorted `v`.
pub(crate) fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// p50, p99 and max of latency samples in nanoseconds, as microseconds.
pub(crate) fn latency_us(samples: &mut [u64]) -> Option<(f64, f64, f64)> {
    samples.sort_unstable();
    let us = |ns: u64| ns as f64 / 1000.0;
    Some((
        us(percentile(samples, 50.0)?),
        us(percentile(samples, 99.0)?),
        us(*samples.last()?),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn runs_show_min_median_max() {
        let r = Runs(vec![3.0, 1.0, 2.0]);
        assert_eq!(r.median(), Some(2.0));
        assert_eq!(r.cell(), "1.00 / **2.00** / 3.00");
        assert_eq!(num(1_234_567.0), "1,234,567");
        assert_eq!(num(12.34), "12.3");
    }

    #[test]
    fn tables_have_ratio_and_target_columns() {
        let mut t = Table::new("x", &["Earshot", "Pushpin"]);
        t.row(
            "msgs/s",
            Better::Higher,
            vec![Runs(vec![200.0]), Runs(vec![100.0])],
            Target::at_least(150.0),
        );
        let s = t.render();
        assert!(s.contains("2.00× (better)"), "{s}");
        assert!(s.contains("| ≥ 150 | yes |"), "{s}");
    }
}
