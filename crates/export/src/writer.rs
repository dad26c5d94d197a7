//! The writers: header, one piece of text per segment, footer, each a pure function of the
//! writer's small state (cue numbering, whether a segment was written yet), so the body can
//! be streamed segment by segment and the output is byte-for-byte reproducible.

use earshot_protocol::asr::speaker_label;
use earshot_protocol::transcript::Segment;
use earshot_protocol::{MeetingId, Source};
use serde::Serialize;

use crate::format::Format;
use crate::layout::{cues, normalize_text, Cue};
use crate::timecode::{timecode, TimeSeparator};

/// Shortest cue, in milliseconds: WebVTT requires a cue to end after it starts, so a
/// zero-length segment (or a share of a very short one) still lasts this long.
pub const MIN_CUE_MS: u64 = 1;

/// Longest speaker label shown, in characters: labels are short names ("user", "others",
/// "Speaker 2"); a worker's runaway label must not fill the subtitle line.
pub const MAX_SPEAKER_CHARS: usize = 32;

/// A final segment as the transcript stream holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSegment {
    /// Its stream id (the resume offset).
    pub offset: String,
    /// The segment.
    pub segment: Segment,
}

/// One segment of the JSON export.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExportedSegment<'a> {
    /// Stream id.
    pub offset: &'a str,
    /// Audio source.
    pub source: Source,
    /// The speaker label ([`speaker_of`]).
    pub speaker: String,
    /// The text as stored.
    pub text: &'a str,
    /// Start, milliseconds into the source's stream.
    pub start_ms: u64,
    /// End, milliseconds into the source's stream.
    pub end_ms: u64,
    /// Confidence in [0, 1], when the worker gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
}

/// The speaker a segment is labelled with: its own `speaker` when it has a non-blank one,
/// else its source's label (`user` for the microphone, `others` for system audio).
pub fn speaker_of(segment: &Segment) -> String {
    let own = segment
        .speaker
        .as_deref()
        .map(normalize_text)
        .filter(|s| !s.is_empty());
    let label = own.unwrap_or_else(|| speaker_label(segment.source).to_owned());
    label.chars().take(MAX_SPEAKER_CHARS).collect()
}

/// Writes one export.
#[derive(Debug, Clone)]
pub struct Writer {
    format: Format,
    meeting: MeetingId,
    /// Cues written so far (SubRip numbers them from 1).
    cues: u64,
    /// Segments written so far.
    segments: u64,
}

impl Writer {
    /// A writer of `meeting`'s export in `format`.
    pub fn new(format: Format, meeting: &MeetingId) -> Writer {
        Writer {
            format,
            meeting: meeting.clone(),
            cues: 0,
            segments: 0,
        }
    }

    /// Segments written so far (blank ones are skipped by every format but JSON).
    pub fn segments(&self) -> u64 {
        self.segments
    }

    /// What the body starts with.
    pub fn header(&self) -> String {
        match self.format {
            Format::Json => format!(
                "{{\"meeting_id\":{},\"segments\":[",
                serde_json::Value::from(self.meeting.as_str())
            ),
            Format::Vtt => "WEBVTT\n".to_owned(),
            Format::Srt | Format::Txt => String::new(),
        }
    }

    /// The text of the next segment (empty when the format skips it).
    pub fn segment(&mut self, stored: &StoredSegment) -> String {
        let seg = &stored.segment;
        let speaker = speaker_of(seg);
        let out = match self.format {
            Format::Json => {
                let exported = ExportedSegment {
                    offset: &stored.offset,
                    source: seg.source,
                    speaker,
                    text: &seg.text,
                    start_ms: seg.start_ms,
                    end_ms: seg.end_ms,
                    confidence: seg.confidence,
                };
                let json = serde_json::to_string(&exported).expect("segments serialize");
                let sep = if self.segments == 0 { "\n" } else { ",\n" };
                format!("{sep}{json}")
            }
            Format::Txt => {
                let text = normalize_text(&seg.text);
                if text.is_empty() {
                    return String::new();
                }
                format!("[{}] {speaker}: {text}\n", clock(seg.start_ms))
            }
            Format::Srt => {
                let label = format!("{speaker}: ");
                let mut out = String::new();
                let cues = cues(&seg.text, label.chars().count());
                for ((start, end), cue) in cue_times(seg.start_ms, seg.end_ms, &cues).into_iter().zip(&cues) {
                    if self.cues > 0 {
                        out.push('\n');
                    }
                    self.cues += 1;
                    out.push_str(&format!(
                        "{}\n{} --> {}\n{label}{}\n",
                        self.cues,
                        timecode(start, TimeSeparator::Comma),
                        timecode(end, TimeSeparator::Comma),
                        cue.lines.join("\n"),
                    ));
                }
                out
            }
            Format::Vtt => {
                let voice = escape(&speaker);
                let mut out = String::new();
                let cues = cues(&seg.text, 0);
                for ((start, end), cue) in cue_times(seg.start_ms, seg.end_ms, &cues).into_iter().zip(&cues) {
                    self.cues += 1;
                    let lines: Vec<String> = cue.lines.iter().map(|l| escape(l)).collect();
                    out.push_str(&format!(
                        "\n{} --> {}\n<v {voice}>{}\n",
                        timecode(start, TimeSeparator::Dot),
                        timecode(end, TimeSeparator::Dot),
                        lines.join("\n"),
                    ));
                }
                out
            }
        };
        if !out.is_empty() || self.format == Format::Json {
            self.segments += 1;
        }
        out
    }

    /// What the body ends with.
    pub fn footer(&self) -> String {
        match self.format {
            Format::Json if self.segments > 0 => "\n]}\n".to_owned(),
            Format::Json => "]}\n".to_owned(),
            Format::Srt | Format::Vtt | Format::Txt => String::new(),
        }
    }
}

/// Each cue's `(start, end)`: the segment's time shared out by the characters each shows
/// (milliseconds rounded down, the last cue ending exactly at `end_ms`), every cue at least
/// [`MIN_CUE_MS`] long.
fn cue_times(start_ms: u64, end_ms: u64, cues: &[Cue]) -> Vec<(u64, u64)> {
    let total: u128 = cues.iter().map(|c| c.chars() as u128).sum::<u128>().max(1);
    let span = u128::from(end_ms.saturating_sub(start_ms));
    let at = |chars: u128| start_ms + u64::try_from(span * chars / total).unwrap_or(u64::MAX);
    let mut before = 0u128;
    cues.iter()
        .enumerate()
        .map(|(i, cue)| {
            let start = at(before);
            before += cue.chars() as u128;
            let end = if i + 1 == cues.len() { end_ms } else { at(before) };
            (start, end.max(start.saturating_add(MIN_CUE_MS)))
        })
        .collect()
}

/// `HH:MM:SS` of the plain-text export.
fn clock(ms: u64) -> String {
    let s = ms / 1_000;
    format!("{:02}:{:02}:{:02}", s / 3_600, s % 3_600 / 60, s % 60)
}

/// WebVTT cue text escaping: `&`, `<` and `>` would otherwise start entities and tags (and
/// `-->` would end the timing line's meaning).
fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(offset: &str, source: Source, text: &str, start_ms: u64, end_ms: u64, speaker: Option<&str>) -> StoredSegment {
        StoredSegment {
            offset: offset.into(),
            segment: Segment {
                meeting_id: "m1".into(),
                source,
                text: text.into(),
                is_final: true,
                start_ms,
                end_ms,
                speaker: speaker.map(str::to_owned),
                confidence: None,
            },
        }
    }

    fn export(format: Format, segments: &[StoredSegment]) -> String {
        let mut w = Writer::new(format, &MeetingId::parse("m1").unwrap());
        let mut out = w.header();
        for s in segments {
            out.push_str(&w.segment(s));
        }
        out.push_str(&w.footer());
        out
    }

    fn two() -> Vec<StoredSegment> {
        vec![
            stored("1-0", Source::Mic, "Hello there.", 1_200, 2_500, None),
            stored("2-0", Source::Sys, "Hi <all> & welcome", 3_000, 4_000, Some("Dana")),
        ]
    }

    #[test]
    fn srt_numbers_cues_with_comma_times_and_speaker_prefix() {
        assert_eq!(
            export(Format::Srt, &two()),
            "1\n00:00:01,200 --> 00:00:02,500\nuser: Hello there.\n\n2\n00:00:03,000 --> 00:00:04,000\nDana: Hi <all> & welcome\n"
        );
    }

    #[test]
    fn vtt_has_its_header_dot_times_voices_and_escapes() {
        assert_eq!(
            export(Format::Vtt, &two()),
            "WEBVTT\n\n00:00:01.200 --> 00:00:02.500\n<v user>Hello there.\n\n00:00:03.000 --> 00:00:04.000\n<v Dana>Hi &lt;all&gt; &amp; welcome\n"
        );
    }

    #[test]
    fn json_and_txt_carry_every_segment() {
        let json = export(Format::Json, &two());
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["meeting_id"], "m1");
        assert_eq!(v["segments"][0]["speaker"], "user");
        assert_eq!(v["segments"][1]["offset"], "2-0");
        assert_eq!(v["segments"][1]["text"], "Hi <all> & welcome");
        assert_eq!(export(Format::Txt, &two()), "[00:00:01] user: Hello there.\n[00:00:03] Dana: Hi <all> & welcome\n");
    }

    #[test]
    fn an_empty_transcript_is_a_valid_empty_file() {
        assert_eq!(export(Format::Srt, &[]), "");
        assert_eq!(export(Format::Vtt, &[]), "WEBVTT\n");
        assert_eq!(export(Format::Txt, &[]), "");
        let v: serde_json::Value = serde_json::from_str(&export(Format::Json, &[])).unwrap();
        assert_eq!(v["segments"], serde_json::json!([]));
    }

    #[test]
    fn blank_segments_make_no_cue_and_no_gap_in_numbering() {
        let segs = [
            stored("1-0", Source::Mic, "one", 0, 10, None),
            stored("2-0", Source::Mic, " \n ", 10, 20, None),
            stored("3-0", Source::Mic, "two", 20, 30, None),
        ];
        let srt = export(Format::Srt, &segs);
        assert!(srt.starts_with("1\n") && srt.contains("\n\n2\n00:00:00,020") && !srt.contains("\n3\n"), "{srt}");
        assert!(!export(Format::Vtt, &segs).contains("<v user>\n"));
        let v: serde_json::Value = serde_json::from_str(&export(Format::Json, &segs)).unwrap();
        assert_eq!(v["segments"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn long_segments_split_into_cues_sharing_the_time_exactly() {
        let text = "word ".repeat(60);
        let mut w = Writer::new(Format::Vtt, &MeetingId::parse("m1").unwrap());
        let out = w.segment(&stored("1-0", Source::Mic, &text, 1_000, 11_001, None));
        let timings: Vec<&str> = out.lines().filter(|l| l.contains(" --> ")).collect();
        assert!(timings.len() >= 3, "{out}");
        assert!(timings[0].starts_with("00:00:01.000 --> "));
        assert!(timings.last().unwrap().ends_with(" --> 00:00:11.001"));
        // Each cue starts where the previous one ended: no gap, no overlap.
        for pair in timings.windows(2) {
            assert_eq!(pair[0].split(" --> ").nth(1), pair[1].split(" --> ").next());
        }
        for cue in out.split("\n\n") {
            assert!(cue.trim_matches('\n').lines().count() <= 3, "timing + two lines: {cue:?}");
        }
    }

    #[test]
    fn ms_shares_round_down_and_zero_length_cues_get_the_minimum() {
        let three = cues("aaaa bbbb cccc", 0);
        assert_eq!(three.len(), 1);
        let split = [Cue { lines: vec!["a".into()] }, Cue { lines: vec!["b".into()] }, Cue { lines: vec!["c".into()] }];
        assert_eq!(cue_times(0, 10, &split), [(0, 3), (3, 6), (6, 10)]);
        assert_eq!(cue_times(5, 5, &split), [(5, 6), (5, 6), (5, 6)]);
        let srt = export(Format::Srt, &[stored("1-0", Source::Mic, "x", 7, 7, None)]);
        assert!(srt.contains("00:00:00,007 --> 00:00:00,008"), "{srt}");
    }

    #[test]
    fn overlapping_and_unicode_segments_keep_their_own_times_and_text() {
        let segs = [
            stored("1-0", Source::Mic, "Grüße aus Köln", 0, 5_000, None),
            stored("2-0", Source::Sys, "会議を始めます", 1_000, 3_000, None),
        ];
        let vtt = export(Format::Vtt, &segs);
        assert!(vtt.contains("00:00:00.000 --> 00:00:05.000\n<v user>Grüße aus Köln\n"));
        assert!(vtt.contains("00:00:01.000 --> 00:00:03.000\n<v others>会議を始めます\n"));
    }

    #[test]
    fn speaker_labels_fall_back_to_the_source_and_are_bounded() {
        let mut s = stored("1-0", Source::Sys, "x", 0, 1, Some("  "));
        assert_eq!(speaker_of(&s.segment), "others");
        s.segment.speaker = Some("n".repeat(100));
        assert_eq!(speaker_of(&s.segment).chars().count(), MAX_SPEAKER_CHARS);
        s.segment.speaker = Some("Ann\nLee".into());
        assert_eq!(speaker_of(&s.segment), "Ann Lee");
    }
}
