//! `Segment::parse`: every transcript segment a speech-to-text worker publishes on
//! `earshot:transcripts` or POSTs to `/api/v1/meetings/{id}/transcript`; plus the resume
//! offset check (`valid_offset`, for `?since=`).
//!
//! Properties: never panics; an accepted segment is valid (meeting id, text size, times,
//! confidence) and survives the trip through the transcript stream (`to_json` → `parse`)
//! and the live message; `valid_offset` accepts only `<digits>-<digits>`.
#![no_main]

use earshot_protocol::transcript::{live_item, valid_offset, Segment, TranscriptMessage, MAX_TEXT_BYTES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((segment, meeting)) = Segment::parse(data) {
        assert_eq!(segment.meeting_id, meeting.as_str());
        assert!(segment.text.len() <= MAX_TEXT_BYTES);
        assert!(segment.start_ms <= segment.end_ms);
        assert!(segment.confidence.is_none_or(|c| (0.0..=1.0).contains(&c)));

        let stored = segment.to_json();
        let (again, _) = Segment::parse(stored.as_bytes()).expect("a stored segment parses again");
        // serde_json reads floats to within an ulp of what it wrote; everything else is exact.
        assert_eq!(Segment { confidence: None, ..again.clone() }, Segment { confidence: None, ..segment.clone() });
        if let (Some(a), Some(b)) = (again.confidence, segment.confidence) {
            assert!((a - b).abs() <= f64::EPSILON, "{a} {b}");
        }

        let message = TranscriptMessage::Transcript { offset: Some("1-0".into()), segment: segment.clone() }.to_json();
        let back: TranscriptMessage = serde_json::from_str(&message).expect("a transcript message parses");
        assert!(matches!(back, TranscriptMessage::Transcript { offset: Some(ref o), .. } if o == "1-0"));
        let item = live_item(&meeting, None, segment);
        assert!(item.ws_payload().is_ok());
    }

    let text = String::from_utf8_lossy(data);
    if valid_offset(&text) {
        let (a, b) = text.split_once('-').expect("an offset has a dash");
        assert!(!a.is_empty() && !b.is_empty());
        assert!(a.bytes().chain(b.bytes()).all(|c| c.is_ascii_digit()), "{text:?}");
    }
});
