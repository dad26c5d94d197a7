//! The meeting's life in Redis through the ingest path: the join at OPEN, the audio expiry
//! at a session's first frame, speech into the totals, the leave (with the end's deadline)
//! at cleanup — the scripts' arguments as the real scripts (run against a real Redis in the
//! integration tests) receive them.

use earshot_protocol::meeting_end::{EXPIRE_SCRIPT, JOIN_SCRIPT, LEAVE_SCRIPT, TALK_SCRIPT};
use earshot_protocol::Event;

use super::fake::Fake;
use super::{settings, streaming, text, Conn, T0};

fn scripts_of(fake: &Fake, script: &str) -> Vec<Vec<String>> {
    fake.scripts
        .iter()
        .filter(|c| c.script == script)
        .map(|c| [c.keys.clone(), c.args.clone()].concat())
        .collect()
}

#[test]
fn a_stream_joins_expires_its_audio_and_schedules_the_end_when_it_leaves() {
    let settings = settings(&[
        ("redis_url", "redis://127.0.0.1:6379"),
        ("meeting_end_grace_s", "2"),
        ("audio_retention_s", "3600"),
    ]);
    let mut fake = Fake::default();
    let mut conn = streaming(&mut fake, &settings);
    let joins = scripts_of(&fake, JOIN_SCRIPT);
    assert_eq!(joins.len(), 1);
    assert_eq!(joins[0][..5], ["earshot:meeting:m1:live", "earshot:meetings:pending-end", "earshot:meeting:m1:totals", "c1", "m1"]);
    assert_eq!(joins[0][5], T0.to_string());

    conn.at(100).send(&settings, &mut fake, vec![Event::Binary(vec![0; 640]), Event::Binary(vec![0; 640])]);
    conn.at(200).send(&settings, &mut fake, vec![Event::Binary(vec![0; 640])]);
    // Once per session, not per frame: the stream exists from the first frame on.
    assert_eq!(scripts_of(&fake, EXPIRE_SCRIPT), vec![vec!["audio:m1:mic".to_owned(), "3600000".to_owned()]]);
    assert!(scripts_of(&fake, LEAVE_SCRIPT).is_empty());

    conn.at(300).send(&settings, &mut fake, vec![text(r#"{"type":"close_stream"}"#)]);
    let leaves = scripts_of(&fake, LEAVE_SCRIPT);
    assert_eq!(leaves.len(), 1);
    let leave = &leaves[0];
    assert_eq!(leave[..5], ["earshot:meeting:m1:live", "earshot:meetings:pending-end", "earshot:meeting:m1:totals", "earshot:meeting:m1:ended", "audio:m1:mic"]);
    assert_eq!(leave[5..8], ["c1".to_owned(), "m1".to_owned(), (T0 + 300).to_string()]);
    // The end is due a grace period after the leave; the audio lives the retention period.
    assert_eq!(leave[8], (T0 + 300 + 2_000).to_string());
    assert_eq!(leave[10], "3600000");
}

#[test]
fn speech_adds_to_the_meetings_talk_total() {
    let settings = super::redis();
    let mut fake = Fake::default();
    let mut conn = streaming(&mut fake, &settings);
    // One second of a tone, then a second of silence: one finished speech segment.
    let tone: Vec<u8> = (0..16_000u32)
        .flat_map(|i| ((8_000.0 * (2.0 * std::f64::consts::PI * 440.0 * f64::from(i) / 16_000.0).sin()) as i16).to_le_bytes())
        .chain(std::iter::repeat_n(0u8, 32_000))
        .collect();
    let mut at = 100;
    for batch in tone.chunks(640 * 5) {
        let frames = batch.chunks(640).map(|f| Event::Binary(f.to_vec())).collect();
        conn.at(at).send(&settings, &mut fake, frames);
        at += 100;
    }
    let talks = scripts_of(&fake, TALK_SCRIPT);
    assert_eq!(talks.len(), 1, "one speech segment: {talks:?}");
    assert_eq!(talks[0][..2], ["earshot:meeting:m1:totals", "talk_ms:mic"]);
    let ms: u64 = talks[0][2].parse().unwrap();
    assert!((900..=1_100).contains(&ms), "talk {ms} ms for a 1 s tone");
}

#[test]
fn without_redis_the_meeting_has_no_life_to_record() {
    let settings = settings(&[]);
    let mut fake = Fake::default();
    let mut conn = Conn::ingest("c1");
    conn.send(&settings, &mut fake, vec![Event::Open]);
    conn.at(10).send(&settings, &mut fake, vec![Event::Disconnect]);
    assert!(fake.scripts.is_empty());
}

#[test]
fn a_failed_leave_is_logged_and_the_stream_still_closes() {
    let settings = super::redis();
    let mut fake = Fake::default();
    let mut conn = streaming(&mut fake, &settings);
    fake.redis_down = true;
    conn.at(100).send(&settings, &mut fake, vec![Event::Disconnect]);
    assert_eq!(conn.state(), "closed");
    assert!(fake.logs.iter().any(|l| l["msg"] == "meeting leave failed"));
}
