//! Meeting events and transcript history end to end (issue 4, parts 2 and 3): the real
//! relay, the real ingest.wasm and a real Redis.
//!
//! - Talk time: a generated tone–silence–tone stream through the ingest WebSocket while a
//!   `/ws/meetings/{id}` subscriber watches: snapshot, presence, speech starts and ends on
//!   the stream's clock, and the final `stats`.
//! - History: `/ws/transcript/{id}?since=` replays what a subscriber missed and joins the
//!   live feed with no gap and no duplicate, even while segments keep arriving; a resume
//!   point older than the retained history is reported.
//!
//! Tolerances: the detector decides per 10 ms analysis window (`earshot_vad::
//! ANALYSIS_WINDOW_MS`), so a speech edge lands within one window of the audio's; ±20 ms is
//! one window plus the same again as margin, for edges and for talk time.

use std::time::Duration;

use earshot_protocol::grip::Item;
use earshot_protocol::ids::GRIP_REDIS_PREFIX;
use earshot_protocol::transcript::{Segment, TranscriptMessage, SEGMENT_FIELD};
use earshot_protocol::Source;
use earshot_testkit::ws::{connect, expect_close, ingest, next_json, next_of_type, token, Ws};
use earshot_testkit::{earshot, Earshot, RedisServer};
use serde_json::{json, Value};

/// ± milliseconds allowed on a speech edge and on talk time (see the module docs).
const TOLERANCE_MS: u64 = 20;

/// The synthetic stream's format: 16 kHz mono s16le, 20 ms frames.
const RATE: u64 = 16_000;
const FRAME_BYTES: usize = 640;

struct Setup {
    redis: RedisServer,
    server: Earshot,
    secret: String,
}

fn setup() -> Setup {
    let redis = RedisServer::start().unwrap();
    let server = earshot!().redis(redis.url()).start().unwrap();
    let (_, secret) = server.dev_secrets().unwrap();
    Setup {
        redis,
        server,
        secret,
    }
}

impl Setup {
    async fn meetings(&self, meeting: &str) -> Ws {
        let sub = token(&self.secret, "subscribe", &[meeting]);
        connect(
            &self
                .server
                .ws_url(&format!("/api/v1/ws/meetings/{meeting}?token={sub}")),
            &[],
        )
        .await
        .unwrap()
    }

    async fn transcript(&self, meeting: &str, since: Option<&str>) -> Ws {
        let sub = token(&self.secret, "subscribe", &[meeting]);
        let since = since.map(|s| format!("&since={s}")).unwrap_or_default();
        connect(
            &self
                .server
                .ws_url(&format!("/api/v1/ws/transcript/{meeting}?token={sub}{since}")),
            &[],
        )
        .await
        .unwrap()
    }

    async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.redis.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

/// A 440 Hz sine at about -15 dBFS (a speech-like level and zero-crossing rate), or digital
/// silence, `ms` long.
fn audio(ms: u64, tone: bool) -> Vec<u8> {
    (0..RATE * ms / 1000)
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

fn assert_near(event: &Value, field: &str, expected: u64) {
    let got = event[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} missing: {event}"));
    assert!(
        got.abs_diff(expected) <= TOLERANCE_MS,
        "{field} = {got}, expected {expected} ± {TOLERANCE_MS}: {event}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn talk_time_of_a_tone_silence_tone_stream_reaches_meeting_subscribers() {
    let s = setup();
    let meeting = "talk";
    let mut watcher = s.meetings(meeting).await;
    // The snapshot comes once the subscription is effective: from then on nothing live is
    // missed, so no settling sleep is needed.
    let snapshot = next_json(&mut watcher).await.unwrap();
    assert_eq!(
        snapshot,
        json!({"type":"snapshot","meeting_id":meeting,"sources":[],"last_transcript_offset":null,"talk":null})
    );

    let mut agent = ingest(&s.server, &s.secret, meeting, "mic").await.unwrap();
    let connection_id = agent.accepted().connection_id.clone();
    let pcm = [audio(1_000, true), audio(1_000, false), audio(1_000, true)].concat();
    // As fast as possible: the detector runs on the stream's clock, not the wall clock.
    for frame in pcm.chunks(FRAME_BYTES) {
        agent.send_frame(frame.to_vec()).await.unwrap();
    }
    // `closed` with every frame, then close 1000 (the agent checks the code).
    let stored = agent.close_stream().await.unwrap();
    assert_eq!(stored.frames, 150);

    let mut events = Vec::new();
    loop {
        let event = next_json(&mut watcher).await.unwrap();
        let done = event["type"] == "source_disconnected";
        events.push(event);
        if done {
            break;
        }
    }
    for event in &events {
        eprintln!("meeting event: {event}");
    }
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    // A periodic `stats` may come in between on a slow machine; the last one is the final.
    let without_stats: Vec<&str> = kinds.iter().copied().filter(|k| *k != "stats").collect();
    assert_eq!(
        without_stats,
        [
            "source_connected",
            "speech_started",
            "speech_ended",
            "speech_started",
            "speech_ended",
            "source_disconnected"
        ],
        "{events:#?}"
    );
    assert_eq!(kinds[kinds.len() - 2], "stats", "{kinds:?}");
    assert_eq!(events[0]["connection_id"], connection_id.as_str());

    let speech: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"].as_str().unwrap().starts_with("speech_"))
        .collect();
    for (event, at) in speech.iter().zip([0, 1_000, 2_000, 3_000]) {
        assert_near(event, "at_ms", at);
        assert_eq!(event["source"], "mic");
        assert_eq!(event["meeting_id"], meeting);
    }
    let start_wall = speech[0]["wall_ms"].as_u64().unwrap() - speech[0]["at_ms"].as_u64().unwrap();
    for event in &speech {
        assert_eq!(
            event["wall_ms"].as_u64().unwrap(),
            start_wall + event["at_ms"].as_u64().unwrap(),
            "wall time is the session's start plus stream time: {event}"
        );
    }
    assert_near(speech[1], "duration_ms", 1_000);
    assert_near(speech[3], "duration_ms", 1_000);

    let stats = &events[events.len() - 2];
    assert_near(&stats["talk_ms"], "mic", 2_000);
    assert_eq!(stats["talk_ms"]["sys"], 0);
    assert_eq!(stats["overlap_ms"], 0);
    assert_eq!(
        stats["silence_ms"].as_u64().unwrap() + stats["talk_ms"]["mic"].as_u64().unwrap(),
        stats["window_ms"].as_u64().unwrap()
    );

    // A subscriber arriving later sees the talk so far in its snapshot.
    let mut late = s.meetings(meeting).await;
    let snapshot = next_json(&mut late).await.unwrap();
    assert_eq!(snapshot["type"], "snapshot");
    assert_eq!(snapshot["sources"], json!([]));
    assert_near(&snapshot["talk"]["talk_ms"], "mic", 2_000);
}

/// Emulates the transcripts component (written separately, by another engineer): a final
/// segment is appended to `transcript:{meeting}` with one field `segment` (the Segment
/// JSON; the stream id is its offset), then published to the GRIP channel
/// `transcript:{meeting}` (Redis channel `earshot:grip:transcript:{meeting}`) as an item whose
/// id is the offset and whose content is `TranscriptMessage::Transcript`. An interim
/// segment is only published, with neither id nor offset.
struct Transcripts {
    con: redis::aio::MultiplexedConnection,
    meeting: String,
    /// `XADD … MAXLEN <n>` (exact) when set.
    maxlen: Option<u64>,
}

impl Transcripts {
    fn segment(&self, i: u64, is_final: bool) -> Segment {
        Segment {
            meeting_id: self.meeting.clone(),
            source: Source::Mic,
            text: format!("segment {i}"),
            is_final,
            start_ms: i * 1_000,
            end_ms: i * 1_000 + 900,
            speaker: None,
            confidence: Some(0.9),
        }
    }

    /// Appends and publishes final segment `i`; returns its offset.
    async fn final_segment(&mut self, i: u64) -> String {
        let segment = self.segment(i, true);
        let mut xadd = redis::cmd("XADD");
        xadd.arg(format!("transcript:{}", self.meeting));
        if let Some(maxlen) = self.maxlen {
            xadd.arg("MAXLEN").arg(maxlen);
        }
        xadd.arg("*")
            .arg(SEGMENT_FIELD)
            .arg(serde_json::to_string(&segment).unwrap());
        let offset: String = xadd.query_async(&mut self.con).await.unwrap();
        self.publish(Some(offset.clone()), segment).await;
        offset
    }

    /// Publishes an interim segment (live only).
    async fn interim(&mut self, i: u64) {
        let segment = self.segment(i, false);
        self.publish(None, segment).await;
    }

    async fn publish(&mut self, offset: Option<String>, segment: Segment) {
        let channel = format!("transcript:{}", self.meeting);
        let content = TranscriptMessage::Transcript {
            offset: offset.clone(),
            segment,
        };
        let item = Item {
            id: offset,
            ..Item::text(channel.clone(), content.to_json())
        };
        let _: i64 = redis::cmd("PUBLISH")
            .arg(format!("{GRIP_REDIS_PREFIX}{channel}"))
            .arg(serde_json::to_string(&item).unwrap())
            .query_async(&mut self.con)
            .await
            .unwrap();
    }
}

/// The next final transcript message (interim ones skipped).
async fn next_final(ws: &mut Ws) -> Value {
    loop {
        let m = next_of_type(ws, "transcript").await.unwrap();
        if m["is_final"] == true {
            return m;
        }
    }
}

/// Asserts nothing more arrives for a while (a duplicate would).
async fn assert_quiet(ws: &mut Ws) {
    if let Ok(m) = tokio::time::timeout(Duration::from_millis(500), next_json(ws)).await {
        panic!("unexpected message: {m:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resumed_transcript_has_no_gap_and_no_duplicate() {
    let s = setup();
    let mut transcripts = Transcripts {
        con: s.redis().await,
        meeting: "hist".into(),
        maxlen: None,
    };

    // Subscriber A, live only: interim probes until its subscription is effective.
    let mut a = s.transcript("hist", None).await;
    let mut probes = 0;
    loop {
        transcripts.interim(probes).await;
        probes += 1;
        if let Ok(m) = tokio::time::timeout(Duration::from_millis(200), next_json(&mut a)).await {
            let m = m.unwrap();
            assert_eq!((m["type"].as_str(), m["is_final"].as_bool()), (Some("transcript"), Some(false)));
            assert!(m.get("offset").is_none(), "interim segments have no offset: {m}");
            break;
        }
        assert!(probes < 50, "the subscription never became effective");
    }
    let mut offsets = Vec::new();
    for i in 1..=3 {
        offsets.push(transcripts.final_segment(i).await);
    }
    for i in 1..=3 {
        let m = next_final(&mut a).await;
        assert_eq!(m["text"], format!("segment {i}"));
        assert_eq!(m["offset"].as_str(), Some(offsets[i as usize - 1].as_str()));
    }
    drop(a);

    // Missed while nobody listened.
    for i in 4..=7 {
        offsets.push(transcripts.final_segment(i).await);
    }
    // More arrive while B connects and replays.
    let mut background = Transcripts {
        con: s.redis().await,
        meeting: "hist".into(),
        maxlen: None,
    };
    let writer = tokio::spawn(async move {
        for i in 8..=12 {
            background.final_segment(i).await;
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
    });
    let mut b = s.transcript("hist", Some(&offsets[2])).await;
    let mut received = Vec::new();
    for _ in 4..=12 {
        received.push(next_final(&mut b).await);
    }
    writer.await.unwrap();
    let texts: Vec<&str> = received.iter().map(|m| m["text"].as_str().unwrap()).collect();
    let expected: Vec<String> = (4..=12).map(|i| format!("segment {i}")).collect();
    assert_eq!(texts, expected, "segments 4..12, in order, each once");
    let got_offsets: Vec<&str> = received.iter().map(|m| m["offset"].as_str().unwrap()).collect();
    assert_eq!(&got_offsets[..4], &offsets[3..7].iter().map(String::as_str).collect::<Vec<_>>()[..]);
    assert!(
        got_offsets.windows(2).all(|w| earshot_protocol::grip::id_after(w[1], w[0])),
        "offsets increase: {got_offsets:?}"
    );
    assert_quiet(&mut b).await;
    // How many came from history (the rest were live, held across the replay).
    for line in s.server.logs().iter().filter(|l| l.contains("transcript history replayed")) {
        eprintln!("{line}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resume_point_older_than_the_retained_history_is_reported_first() {
    let s = setup();
    let mut transcripts = Transcripts {
        con: s.redis().await,
        meeting: "trim".into(),
        maxlen: Some(2),
    };
    let mut offsets = Vec::new();
    for i in 1..=5 {
        offsets.push(transcripts.final_segment(i).await);
    }
    let mut c = s.transcript("trim", Some(&offsets[0])).await;
    let first = next_json(&mut c).await.unwrap();
    assert_eq!(
        first,
        json!({"type":"history_truncated","since":offsets[0],"first_offset":offsets[3]})
    );
    for i in 4..=5 {
        let m = next_json(&mut c).await.unwrap();
        assert_eq!((m["type"].as_str(), m["text"].clone()), (Some("transcript"), json!(format!("segment {i}"))));
    }
    assert_quiet(&mut c).await;

    // Resuming at a retained offset: no report.
    let mut c = s.transcript("trim", Some(&offsets[3])).await;
    assert_eq!(next_json(&mut c).await.unwrap()["offset"], offsets[4]);

    // An offset that is not one is a bad request.
    let mut c = s.transcript("trim", Some("yesterday")).await;
    let (code, reason, _) = expect_close(&mut c).await.unwrap();
    assert_eq!((code, reason.as_str()), (1002, "bad request: invalid since"));
}
