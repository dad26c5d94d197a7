//! `WsRoute::parse` (path and query of every WebSocket upgrade), `MeetingId::parse`,
//! `Source::parse` and the HTTP transcript intake path.
//!
//! Properties: never panics; an accepted route names a meeting id that parses again, is
//! one of the three route shapes, and the path it came from starts with the WebSocket
//! prefix; an accepted meeting id is 1–128 bytes of `[A-Za-z0-9._-]`.
#![no_main]

use earshot_protocol::ids::{query_values, MeetingId, Source, WsRoute, MAX_MEETING_ID_LEN, WS_PREFIX};
use earshot_protocol::transcript::parse_intake_path;
use libfuzzer_sys::fuzz_target;

fn check_meeting(m: &MeetingId) {
    let s = m.as_str();
    assert!((1..=MAX_MEETING_ID_LEN).contains(&s.len()), "{s:?}");
    assert!(s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')), "{s:?}");
    assert!(s != "." && s != "..");
    assert_eq!(MeetingId::parse(s).as_ref(), Ok(m));
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (path, query) = match text.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (&*text, None),
    };
    for q in [query, None] {
        if let Ok(route) = WsRoute::parse(path, q) {
            assert!(path.starts_with(WS_PREFIX), "{path:?}");
            check_meeting(route.meeting());
            if let WsRoute::Ingest { source, .. } = route {
                assert_eq!(Source::parse(source.as_str()), Ok(source));
            }
        }
    }
    let _ = query_values(query, "since");
    if let Ok(m) = parse_intake_path(path) {
        check_meeting(&m);
    }
    if let Ok(m) = MeetingId::parse(&text) {
        check_meeting(&m);
    }
    if let Ok(s) = Source::parse(&text) {
        assert!(matches!(&*text, "mic" | "sys" | "system"));
        assert_eq!(Source::parse(s.as_str()), Ok(s));
    }
});
