//! Talk-time analytics through the ingest path: synthetic PCM in, `speech_started`,
//! `speech_ended` and `stats` out on the meeting's channel, the detector carried in `Meta-*`.

use earshot_protocol::meeting::STATS_INTERVAL_MS;
use earshot_protocol::{Event, Source};
use serde_json::{json, Value};

use super::fake::Fake;
use super::{redis, streaming, text, token, Conn, HANDSHAKE, T0};
use earshot_ws_session::talk::{self, TalkChange, TalkRecord, MAX_SPEECH_INTERVALS};

/// Sample rate of the synthetic audio, Hz.
const RATE: u64 = 16_000;
/// Samples in one 20 ms frame.
const FRAME_SAMPLES: usize = 320;

/// A 440 Hz sine at about -15 dBFS (voice-like level and zero-crossing rate), or digital
/// silence, `ms` long, as 16-bit little-endian mono.
fn audio(ms: u64, tone: bool) -> Vec<u8> {
    let n = RATE * ms / 1000;
    (0..n)
        .flat_map(|i| {
            let t = i as f64 / RATE as f64;
            let s = if tone {
                (8_000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()).round() as i16
            } else {
                0
            };
            s.to_le_bytes()
        })
        .collect()
}

/// tone(1 s) – silence(1 s) – tone(1 s).
fn tone_silence_tone() -> Vec<u8> {
    [audio(1_000, true), audio(1_000, false), audio(1_000, true)].concat()
}

/// 20 ms frames.
fn frames(pcm: &[u8]) -> Vec<Event> {
    pcm.chunks(FRAME_SAMPLES * 2)
        .map(|f| Event::Binary(f.to_vec()))
        .collect()
}

/// Sends `pcm` in real time: one request per 100 ms of audio, starting at `from_ms`.
/// Returns when the last request went out.
fn stream_paced(conn: &mut Conn, fake: &mut Fake, pcm: &[u8], from_ms: u64) -> u64 {
    let settings = redis();
    let mut at = from_ms;
    for batch in frames(pcm).chunks(5) {
        conn.at(at).send(&settings, fake, batch.to_vec());
        at += 100;
    }
    at - 100
}

fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

fn near(value: &Value, expected: u64, tolerance: u64) -> bool {
    value
        .as_u64()
        .is_some_and(|v| v.abs_diff(expected) <= tolerance)
}

#[test]
fn tone_silence_tone_gives_two_speeches_and_two_seconds_of_talk() {
    let settings = redis();
    let mut fake = Fake::default();
    let mut conn = streaming(&mut fake, &settings);
    assert_eq!(conn.meta["vad-format"], "16000/1");
    assert!(
        conn.meta["vad"].starts_with("v1.16000.1.0."),
        "{}",
        conn.meta["vad"]
    );

    let last = stream_paced(&mut conn, &mut fake, &tone_silence_tone(), 20);
    let start = T0 + 20;
    assert_eq!(conn.meta["audio-start-ms"], start.to_string());
    let before_close = fake.meeting_events();
    let kinds: Vec<&str> = before_close
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "source_connected",
            "speech_started",
            "speech_ended",
            "speech_started"
        ],
        "the second speech is still under way"
    );

    conn.at(last + 50).send(
        &settings,
        &mut fake,
        vec![text(r#"{"type":"close_stream"}"#)],
    );
    let events = fake.meeting_events();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "source_connected",
            "speech_started",
            "speech_ended",
            "speech_started",
            "speech_ended",
            "stats",
            "source_disconnected"
        ]
    );
    // One analysis window (10 ms) is the detector's resolution.
    let started = of_type(&events, "speech_started");
    let ended = of_type(&events, "speech_ended");
    for (event, at) in [
        (started[0], 0),
        (ended[0], 1_000),
        (started[1], 2_000),
        (ended[1], 3_000),
    ] {
        assert!(near(&event["at_ms"], at, 10), "{event}");
        assert_eq!(
            event["wall_ms"],
            start + event["at_ms"].as_u64().unwrap(),
            "{event}"
        );
        assert_eq!(event["source"], "mic");
        assert_eq!(event["meeting_id"], "m1");
    }
    for event in &ended {
        assert!(near(&event["duration_ms"], 1_000, 20), "{event}");
    }

    let stats = of_type(&events, "stats")[0];
    assert!(near(&stats["talk_ms"]["mic"], 2_000, 20), "{stats}");
    assert_eq!(stats["talk_ms"]["sys"], 0);
    assert_eq!(stats["overlap_ms"], 0);
    // The window runs from the first sample to the end of the audio (each request carried
    // the 100 ms up to 100 ms after it was sent, so the audio ends after the close).
    let window = stats["window_ms"].as_u64().unwrap();
    assert_eq!(window, 3_000, "{stats}");
    assert_eq!(
        stats["silence_ms"].as_u64().unwrap() + stats["talk_ms"]["mic"].as_u64().unwrap(),
        window
    );
}

#[test]
fn audio_faster_than_real_time_keeps_its_own_clock() {
    let settings = redis();
    let mut fake = Fake::default();
    let mut conn = streaming(&mut fake, &settings);
    // All three seconds in one request, closed 10 ms later.
    conn.at(20)
        .send(&settings, &mut fake, frames(&tone_silence_tone()));
    conn.at(30).send(
        &settings,
        &mut fake,
        vec![text(r#"{"type":"close_stream"}"#)],
    );
    let events = fake.meeting_events();
    let ended = of_type(&events, "speech_ended");
    assert!(near(&ended[1]["at_ms"], 3_000, 10), "{}", ended[1]);
    let stats = of_type(&events, "stats")[0];
    assert!(near(&stats["talk_ms"]["mic"], 2_000, 20), "{stats}");
    assert_eq!(
        stats["window_ms"], 3_000,
        "the window follows the audio, not the wall clock"
    );
    assert_eq!(stats["wall_ms"], T0 + 20 + 3_000);
    assert!(near(&stats["silence_ms"], 1_000, 20), "{stats}");
}

#[test]
fn a_disconnect_mid_speech_ends_it_at_the_end_of_the_audio() {
    let settings = redis();
    let mut fake = Fake::default();
    let mut conn = streaming(&mut fake, &settings);
    let last = stream_paced(&mut conn, &mut fake, &audio(1_000, true), 20);
    conn.at(last + 20)
        .send(&settings, &mut fake, vec![Event::Disconnect]);
    let events = fake.meeting_events();
    let ended = of_type(&events, "speech_ended");
    assert_eq!(ended.len(), 1);
    assert!(near(&ended[0]["at_ms"], 1_000, 10), "{}", ended[0]);
    let stats = of_type(&events, "stats")[0];
    assert!(near(&stats["talk_ms"]["mic"], 1_000, 10), "{stats}");
    let last = events.last().unwrap();
    assert_eq!(
        (&last["type"], &last["reason"]),
        (&json!("source_disconnected"), &json!("disconnected"))
    );
}

#[test]
fn an_idle_close_finishes_the_analytics_too() {
    let settings = redis();
    let mut fake = Fake::default();
    let mut conn = streaming(&mut fake, &settings);
    let last = stream_paced(&mut conn, &mut fake, &audio(500, true), 20);
    // The relay's keep-alive after `idle_timeout_ms` without audio.
    let reply = conn.at(last + 10_000).send(&settings, &mut fake, vec![]);
    assert_eq!(reply.events.last(), Some(&super::close(1000, "idle")));
    let events = fake.meeting_events();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "source_connected",
            "speech_started",
            "speech_ended",
            "stats",
            "source_disconnected"
        ]
    );
    let stats = of_type(&events, "stats")[0];
    assert!(near(&stats["talk_ms"]["mic"], 500, 10), "{stats}");
    assert_eq!(
        stats["wall_ms"],
        T0 + last + 10_000,
        "the window runs to the close: ten silent seconds"
    );
}

#[test]
fn the_detector_state_survives_every_request() {
    // One frame per request, so every window and segment spans a Meta round trip.
    let settings = redis();
    let mut fake = Fake::default();
    let mut conn = streaming(&mut fake, &settings);
    for (i, frame) in frames(&tone_silence_tone()).into_iter().enumerate() {
        conn.at(20 + i as u64 * 20)
            .send(&settings, &mut fake, vec![frame]);
    }
    conn.at(3_100).send(
        &settings,
        &mut fake,
        vec![text(r#"{"type":"close_stream"}"#)],
    );
    let events = fake.meeting_events();
    let stats = of_type(&events, "stats")[0];
    assert!(near(&stats["talk_ms"]["mic"], 2_000, 20), "{stats}");
    assert_eq!(of_type(&events, "speech_started").len(), 2);
}

#[test]
fn without_audio_there_are_no_analytics() {
    let settings = redis();
    let mut fake = Fake::default();
    let mut conn = streaming(&mut fake, &settings);
    conn.at(20).send(
        &settings,
        &mut fake,
        vec![text(r#"{"type":"close_stream"}"#)],
    );
    let kinds: Vec<Value> = fake
        .meeting_events()
        .iter()
        .map(|e| e["type"].clone())
        .collect();
    assert_eq!(
        kinds,
        [json!("source_connected"), json!("source_disconnected")]
    );
    assert!(!fake.kv.contains_key("meeting:m1:talk"));
}

fn sys_conn() -> Conn {
    let query = format!("source=sys&token={}", token("ingest", &["m1"]));
    Conn::new("/api/v1/ws/ingest/meetings/m1", Some(&query), "s1")
}

#[test]
fn one_source_emits_the_periodic_stats_and_overlap_is_counted() {
    let settings = redis();
    let mut fake = Fake::default();
    let mut mic = streaming(&mut fake, &settings);
    let mut sys = sys_conn();
    sys.at(0).send(&settings, &mut fake, vec![Event::Open]);
    sys.at(10).send(&settings, &mut fake, vec![text(HANDSHAKE)]);

    // mic talks 0–6 s, sys 3–9 s (both start their audio at T0 + 20), in real time.
    let mic_pcm = [audio(6_000, true), audio(4_000, false)].concat();
    let sys_pcm = [audio(3_000, false), audio(6_000, true), audio(1_000, false)].concat();
    let (mic_frames, sys_frames) = (frames(&mic_pcm), frames(&sys_pcm));
    let mut at = 20;
    for (m, s) in mic_frames.chunks(5).zip(sys_frames.chunks(5)) {
        mic.at(at).send(&settings, &mut fake, m.to_vec());
        sys.at(at).send(&settings, &mut fake, s.to_vec());
        at += 100;
    }
    let periodic = of_type(&fake.meeting_events(), "stats")
        .into_iter()
        .cloned()
        .collect::<Vec<_>>();
    // 10 s of audio from T0 + 20: elections are due at +5 020 and won at most once per
    // interval, whichever source asks first (mic, here).
    assert_eq!(periodic.len(), 1, "{periodic:?}");
    assert_eq!(
        fake.kv["meeting:m1:stats-at"],
        (T0 + 20 + STATS_INTERVAL_MS).to_string().into_bytes()
    );
    // mic's request at +5 020 carried its audio up to 5.1 s: the statistics run to there.
    // Both still speak: mic for 5.1 s, sys for 2.1 s, all of that together.
    let first = &periodic[0];
    assert_eq!(first["wall_ms"], T0 + 20 + 5_100);
    assert_eq!(first["window_ms"], 5_100);
    assert!(near(&first["talk_ms"]["mic"], 5_100, 20), "{first}");
    assert!(near(&first["talk_ms"]["sys"], 2_100, 20), "{first}");
    assert!(near(&first["overlap_ms"], 2_100, 20), "{first}");
    assert_eq!(first["silence_ms"], 0);

    mic.at(at).send(
        &settings,
        &mut fake,
        vec![text(r#"{"type":"close_stream"}"#)],
    );
    sys.at(at).send(
        &settings,
        &mut fake,
        vec![text(r#"{"type":"close_stream"}"#)],
    );
    let events = fake.meeting_events();
    let stats = of_type(&events, "stats");
    assert_eq!(stats.len(), 3, "the periodic one and one per stream end");
    let last = stats[2];
    assert!(near(&last["talk_ms"]["mic"], 6_000, 20), "{last}");
    assert!(near(&last["talk_ms"]["sys"], 6_000, 20), "{last}");
    assert!(near(&last["overlap_ms"], 3_000, 20), "{last}");
    assert!(near(&last["silence_ms"], 1_000, 20), "{last}");
    assert_eq!(last["window_ms"], 10_000);
}

#[test]
fn the_stats_election_lets_one_connection_through_per_interval() {
    let now = T0;
    let (won, stored) = talk::elect(None, now, STATS_INTERVAL_MS);
    assert_eq!(won, talk::Election::Won);
    let stored = stored.unwrap();
    let (lost, none) = talk::elect(
        Some(&stored),
        now + STATS_INTERVAL_MS - 1,
        STATS_INTERVAL_MS,
    );
    assert_eq!(lost, talk::Election::Lost { last_ms: now });
    assert_eq!(none, None);
    let (again, _) = talk::elect(Some(&stored), now + STATS_INTERVAL_MS, STATS_INTERVAL_MS);
    assert_eq!(again, talk::Election::Won);
    assert_eq!(
        talk::elect(Some(b"garbage"), now, STATS_INTERVAL_MS).0,
        talk::Election::Won
    );

    // Through the state machine, with the CAS racing: two mic/sys connections due at
    // the same time, one stats event.
    let settings = redis();
    let mut fake = Fake::default();
    let mut mic = streaming(&mut fake, &settings);
    let mut sys = sys_conn();
    sys.at(0).send(&settings, &mut fake, vec![Event::Open]);
    sys.at(10).send(&settings, &mut fake, vec![text(HANDSHAKE)]);
    mic.at(20)
        .send(&settings, &mut fake, frames(&audio(100, true)));
    sys.at(20)
        .send(&settings, &mut fake, frames(&audio(100, true)));
    let due = 20 + STATS_INTERVAL_MS;
    fake.cas_races = 1;
    mic.at(due)
        .send(&settings, &mut fake, vec![text(r#"{"type":"keepalive"}"#)]);
    sys.at(due)
        .send(&settings, &mut fake, vec![text(r#"{"type":"keepalive"}"#)]);
    assert_eq!(of_type(&fake.meeting_events(), "stats").len(), 1);
    assert_eq!(
        sys.meta["stats-due-ms"],
        (T0 + due + STATS_INTERVAL_MS).to_string()
    );
    // Not before the next interval, from either.
    mic.at(due + 1_000)
        .send(&settings, &mut fake, vec![text(r#"{"type":"keepalive"}"#)]);
    sys.at(due + 1_000)
        .send(&settings, &mut fake, vec![text(r#"{"type":"keepalive"}"#)]);
    assert_eq!(of_type(&fake.meeting_events(), "stats").len(), 1);
}

#[test]
fn the_talk_record_holds_what_a_later_snapshot_shows() {
    let settings = redis();
    let mut fake = Fake::default();
    let mut conn = streaming(&mut fake, &settings);
    conn.at(20)
        .send(&settings, &mut fake, frames(&tone_silence_tone()));
    conn.at(30).send(
        &settings,
        &mut fake,
        vec![text(r#"{"type":"close_stream"}"#)],
    );
    // What the subscribe component reads for the snapshot, and computes the same way.
    let record = talk::read(fake.kv.get("meeting:m1:talk").map(Vec::as_slice)).unwrap();
    let summary = serde_json::to_value(talk::summary(&record, T0 + 5_010, 0)).unwrap();
    assert!(near(&summary["talk_ms"]["mic"], 2_000, 20), "{summary}");
    assert_eq!(summary["wall_ms"], T0 + 5_010, "up to now");
    assert_eq!(summary["window_ms"], 5_010 - 20);
}

#[test]
fn the_talk_record_is_bounded_and_the_window_follows_it() {
    let mut record: Option<Vec<u8>> = None;
    for i in 0..(MAX_SPEECH_INTERVALS as u64 + 3) {
        let change = TalkChange::SpeechEnded {
            source: Source::Mic,
            start_ms: 1_000 * i,
            end_ms: 1_000 * i + 500,
        };
        record = Some(talk::apply(record.as_deref(), change));
    }
    let parsed: TalkRecord = talk::read(record.as_deref()).unwrap();
    let mic = &parsed.sources[&Source::Mic];
    assert_eq!(mic.intervals.len(), MAX_SPEECH_INTERVALS);
    assert_eq!(mic.complete_from_ms, 2_500, "the end of the third, dropped");
    let summary = talk::summary(&parsed, 0, 0);
    let end = 1_000 * (MAX_SPEECH_INTERVALS as u64 + 2) + 500;
    assert_eq!(summary.window_ms, end - 2_500);
    assert_eq!(
        summary.talk_ms[&Source::Mic],
        500 * MAX_SPEECH_INTERVALS as u64
    );

    // A speech under way counts up to now; a new session forgets a stale one.
    let open = talk::apply(
        record.as_deref(),
        TalkChange::SpeechStarted {
            source: Source::Sys,
            at_ms: end,
        },
    );
    let summary = talk::summary(&talk::read(Some(&open)).unwrap(), end + 700, 0);
    assert_eq!(summary.talk_ms[&Source::Sys], 700);
    let restarted = talk::apply(
        Some(&open),
        TalkChange::SessionStarted {
            source: Source::Sys,
            at_ms: end + 800,
        },
    );
    let summary = talk::summary(&talk::read(Some(&restarted)).unwrap(), end + 900, 0);
    assert_eq!(summary.talk_ms[&Source::Sys], 0);
}
