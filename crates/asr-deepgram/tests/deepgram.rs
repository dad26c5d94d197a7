//! The Deepgram bridge against `DeepgramStandIn`, a local stand-in speaking Deepgram's
//! live protocol (see `stand_in/mod.rs`): results mapped to hypotheses, keep-alives in
//! silence, Finalize then CloseStream at the end, reconnect with replay, 401 handling.

mod stand_in;

use std::thread::sleep;
use std::time::{Duration, Instant};

use earshot_asr_deepgram::{DeepgramConfig, DeepgramEngine};
use earshot_asr_engine::{Engine, EngineError, Hypothesis, Session, SessionSpec};
use serde_json::json;
use stand_in::{coded_audio, ConnectionPlan, DeepgramStandIn, Frame, Plan, BLOCK_BYTES};

const KEY: &str = "stand-in-key-0123456789";

/// Longest a test waits for the bridge to deliver what the stand-in sent.
const PATIENCE: Duration = Duration::from_secs(5);

fn config(stand_in: &DeepgramStandIn) -> DeepgramConfig {
    let mut config = DeepgramConfig::new(KEY).with_base_url(stand_in.url());
    config.reconnect_backoff = Duration::from_millis(20);
    config.connect_timeout = Duration::from_secs(2);
    config.flush_timeout = Duration::from_secs(3);
    config
}

fn open(config: DeepgramConfig, spec: SessionSpec) -> Box<dyn Session> {
    DeepgramEngine::new(config).unwrap().open(&spec).unwrap()
}

/// Pushes `audio` in `chunk`-byte pieces a little faster than real time, collecting.
fn feed(session: &mut dyn Session, audio: &[u8], chunk: usize, out: &mut Vec<Hypothesis>) {
    for piece in audio.chunks(chunk) {
        out.extend(session.push(piece).unwrap());
        sleep(Duration::from_millis(2));
    }
}

/// Polls until `done` holds for what was collected (or the patience runs out).
fn pump(
    session: &mut dyn Session,
    out: &mut Vec<Hypothesis>,
    done: impl Fn(&[Hypothesis], u64) -> bool,
) {
    let deadline = Instant::now() + PATIENCE;
    while !done(out, session.settled_ms()) && Instant::now() < deadline {
        out.extend(session.poll().unwrap());
        sleep(Duration::from_millis(10));
    }
}

fn finals(hypotheses: &[Hypothesis]) -> Vec<&Hypothesis> {
    hypotheses.iter().filter(|h| h.is_final).collect()
}

fn results(
    start: f64,
    duration: f64,
    is_final: bool,
    transcript: &str,
    confidence: f64,
    words: serde_json::Value,
) -> String {
    json!({
        "type": "Results", "channel_index": [0, 1], "start": start, "duration": duration,
        "is_final": is_final, "speech_final": is_final, "from_finalize": false,
        "channel": {"alternatives": [{"transcript": transcript, "confidence": confidence, "words": words}]},
        "metadata": {"request_id": "r", "model_info": {"name": "n", "version": "v", "arch": "a"}, "model_uuid": "u"}
    })
    .to_string()
}

#[test]
fn results_map_to_interim_and_final_hypotheses_in_stream_time() {
    let hello = json!([
        {"word": "hello", "start": 1.3, "end": 1.6, "confidence": 0.99, "punctuated_word": "Hello"},
        {"word": "world", "start": 1.7, "end": 2.2, "confidence": 0.95, "punctuated_word": "world."}
    ]);
    let script = vec![
        // Each message comes once the audio it describes has arrived, as Deepgram does.
        (
            56_000,
            results(1.25, 0.5, false, "hello wor", 0.6, json!([])),
        ),
        (
            72_000,
            json!({"type": "SpeechStarted", "channel": [0], "timestamp": 1.2}).to_string(),
        ),
        (
            72_000,
            results(1.25, 1.0, true, "Hello world.", 0.97, hello),
        ),
        (
            72_000,
            json!({"type": "SomethingNew", "value": 1}).to_string(),
        ),
        (72_000, "not json at all".to_string()),
        (96_000, results(2.25, 0.75, true, "", 0.0, json!([]))),
        (
            96_000,
            json!({"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": 2.2}).to_string(),
        ),
    ];
    let stand_in = DeepgramStandIn::start(Plan {
        key: KEY.into(),
        connections: vec![ConnectionPlan {
            scripted: script,
            ..Default::default()
        }],
        ..Default::default()
    });
    // Resumed at 10 s: every time is offset by it.
    let mut session = open(
        config(&stand_in),
        SessionSpec::new("m1", "mic").starting_at(10_000),
    );
    let mut got = Vec::new();
    feed(
        session.as_mut(),
        &vec![0u8; 3 * 32_000 + 16_000],
        3_200,
        &mut got,
    );
    pump(session.as_mut(), &mut got, |h, settled| {
        finals(h).len() == 1 && settled == 13_000
    });

    assert_eq!(
        got.len(),
        2,
        "interim + final, the empty final dropped: {got:#?}"
    );
    let interim = &got[0];
    assert!(!interim.is_final);
    assert_eq!(
        (interim.text.as_str(), interim.start_ms, interim.end_ms),
        ("hello wor", 11_250, 11_750)
    );
    assert_eq!(interim.words, None);
    assert!((interim.confidence.unwrap() - 0.6).abs() < 1e-6);

    let fin = &got[1];
    assert!(fin.is_final);
    assert_eq!(
        (fin.text.as_str(), fin.start_ms, fin.end_ms),
        ("Hello world.", 11_250, 12_250)
    );
    assert!((fin.confidence.unwrap() - 0.97).abs() < 1e-6);
    let words = fin.words.as_ref().unwrap();
    let shape: Vec<(&str, u64, u64)> = words
        .iter()
        .map(|w| (w.text.as_str(), w.start_ms, w.end_ms))
        .collect();
    assert_eq!(
        shape,
        [("Hello", 11_300, 11_600), ("world.", 11_700, 12_200)]
    );
    assert!((words[1].confidence.unwrap() - 0.95).abs() < 1e-6);
    // The empty final over 2.25–3.0 s still settles its audio.
    assert_eq!(session.settled_ms(), 13_000);

    assert_eq!(session.flush().unwrap(), vec![]);
    assert!(matches!(session.push(&[0, 0]), Err(EngineError::Closed)));
}

#[test]
fn handshake_carries_the_query_and_the_token_header() {
    let stand_in = DeepgramStandIn::start(Plan {
        key: KEY.into(),
        ..Default::default()
    });
    let mut config = config(&stand_in);
    config.model = Some("nova-2".into());
    config.language = Some("en-US".into());
    config.keyterms = vec!["Earshot".into(), "Spin app".into()];
    config.diarize = true;
    config.endpointing_ms = 250;
    config.utterance_end_ms = 1_500;
    let engine = DeepgramEngine::new(config).unwrap();
    assert_eq!(engine.name(), "deepgram");
    assert!(
        !format!("{engine:?}").contains(KEY),
        "the key leaks through Debug"
    );
    let mut session = engine.open(&SessionSpec::new("m1", "sys")).unwrap();
    session.flush().unwrap();

    let conns = stand_in.connections();
    assert_eq!(conns.len(), 1);
    let conn = &conns[0];
    assert_eq!(conn.path, "/v1/listen");
    assert_eq!(
        conn.authorization.as_deref(),
        Some(format!("Token {KEY}").as_str())
    );
    for (name, value) in [
        ("encoding", "linear16"),
        ("sample_rate", "16000"),
        ("channels", "1"),
        ("interim_results", "true"),
        ("endpointing", "250"),
        ("utterance_end_ms", "1500"),
        ("vad_events", "true"),
        ("model", "nova-2"),
        ("language", "en-US"),
        ("diarize", "true"),
    ] {
        assert_eq!(conn.param(name), Some(value), "{name} in {:?}", conn.query);
    }
    let keyterms: Vec<&str> = conn
        .query
        .iter()
        .filter(|(k, _)| k == "keyterm")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(keyterms, ["Earshot", "Spin app"]);
}

#[test]
fn keepalives_flow_during_silence_only() {
    let stand_in = DeepgramStandIn::start(Plan {
        key: KEY.into(),
        ..Default::default()
    });
    let mut config = config(&stand_in);
    config.keepalive_interval = Duration::from_millis(100);
    let mut session = open(config, SessionSpec::new("m1", "mic"));
    session.push(&[1u8; 6_400]).unwrap();
    // 650 ms without audio: about six keep-alives.
    let quiet_until = Instant::now() + Duration::from_millis(650);
    while Instant::now() < quiet_until {
        session.poll().unwrap();
        sleep(Duration::from_millis(20));
    }
    session.push(&[2u8; 6_400]).unwrap();
    session.flush().unwrap();

    let frames = &stand_in.connections()[0].frames;
    let first_audio = frames
        .iter()
        .position(|f| matches!(f, Frame::Binary(b) if b[0] == 1))
        .unwrap();
    let second_audio = frames
        .iter()
        .position(|f| matches!(f, Frame::Binary(b) if b[0] == 2))
        .unwrap();
    let is_keepalive = |f: &Frame| matches!(f, Frame::Text(t) if t == r#"{"type":"KeepAlive"}"#);
    let in_silence = frames[first_audio..second_audio]
        .iter()
        .filter(|f| is_keepalive(f))
        .count();
    assert!(
        (4..=8).contains(&in_silence),
        "{in_silence} keep-alives in 650 ms of silence: {frames:?}"
    );
}

#[test]
fn the_end_is_finalize_then_close_stream_and_no_frame_is_empty() {
    let stand_in = DeepgramStandIn::start(Plan {
        key: KEY.into(),
        default: ConnectionPlan {
            recognize: true,
            ..Default::default()
        },
        ..Default::default()
    });
    let mut session = open(config(&stand_in), SessionSpec::new("m1", "mic"));
    let mut audio = coded_audio(&[1, 2, 3]);
    audio.extend(coded_audio(&[4])[..BLOCK_BYTES / 2].iter()); // half a word at the end
    let mut got = Vec::new();
    // Odd piece sizes split samples across pushes; empty pushes must not become frames.
    for piece in audio.chunks(333) {
        got.extend(session.push(piece).unwrap());
        got.extend(session.push(&[]).unwrap());
    }
    got.extend(session.flush().unwrap());

    let texts: Vec<&str> = finals(&got).iter().map(|h| h.text.as_str()).collect();
    assert_eq!(texts, ["W1.", "W2.", "W3.", "W4."], "{got:#?}");
    let last = finals(&got)[3];
    assert_eq!(
        (last.start_ms, last.end_ms),
        (600, 700),
        "the finalised half word"
    );
    assert!(got.iter().any(|h| !h.is_final), "interims came too");

    let conn = &stand_in.connections()[0];
    assert_eq!(conn.audio(), audio, "every byte arrived, in order");
    assert!(
        conn.frames
            .iter()
            .all(|f| !matches!(f, Frame::Binary(b) if b.is_empty())),
        "an empty binary frame was sent"
    );
    let types = conn.text_types();
    assert_eq!(types[types.len() - 2..], ["Finalize", "CloseStream"]);
    let finalize_at = conn
        .frames
        .iter()
        .position(|f| matches!(f, Frame::Text(t) if t.contains("Finalize")))
        .unwrap();
    assert!(
        !conn.frames[finalize_at..]
            .iter()
            .any(|f| matches!(f, Frame::Binary(_))),
        "audio after Finalize"
    );
    assert_eq!(session.settled_ms(), 700);
}

/// Streams eight coded words through a first connection that `ends` mid-word, then checks
/// the second connection got the audio since the last final and nothing was lost.
fn survives_a_lost_socket(first: ConnectionPlan) {
    let stand_in = DeepgramStandIn::start(Plan {
        key: KEY.into(),
        connections: vec![first],
        default: ConnectionPlan {
            recognize: true,
            ..Default::default()
        },
        ..Default::default()
    });
    let words: Vec<i16> = (1..=8).collect();
    let audio = coded_audio(&words);
    let mut session = open(
        config(&stand_in),
        SessionSpec::new("m1", "mic").starting_at(5_000),
    );
    let mut got = Vec::new();
    feed(session.as_mut(), &audio, 640, &mut got);
    pump(session.as_mut(), &mut got, |h, _| finals(h).len() >= 8);
    got.extend(session.flush().unwrap());

    let finals = finals(&got);
    let texts: Vec<&str> = finals.iter().map(|h| h.text.as_str()).collect();
    let expected: Vec<String> = words.iter().map(|w| format!("W{w}.")).collect();
    assert_eq!(texts, expected, "every word once, in order: {got:#?}");
    for (i, h) in finals.iter().enumerate() {
        let start = 5_000 + 200 * i as u64;
        assert_eq!(
            (h.start_ms, h.end_ms),
            (start, start + 200),
            "times continue across the reconnect"
        );
        let word = &h.words.as_ref().unwrap()[0];
        assert_eq!((word.start_ms, word.end_ms), (start, start + 200));
    }
    assert_eq!(session.settled_ms(), 5_000 + 1_600);

    let conns = stand_in.connections();
    assert_eq!(conns.len(), 2, "one reconnect");
    assert!(audio.starts_with(&conns[0].audio()));
    // Two finals (W1, W2) came before the loss: the replay starts right after them.
    assert_eq!(
        conns[1].audio(),
        audio[2 * BLOCK_BYTES..],
        "replay = the audio since the last final"
    );
    assert_eq!(
        conns[1].text_types()[conns[1].text_types().len() - 2..],
        ["Finalize", "CloseStream"]
    );
}

#[test]
fn a_dropped_socket_reconnects_and_replays_since_the_last_final() {
    survives_a_lost_socket(ConnectionPlan {
        recognize: true,
        drop_after_bytes: Some(2 * BLOCK_BYTES + BLOCK_BYTES / 2),
        ..Default::default()
    });
}

#[test]
fn a_1011_close_reconnects_and_replays_since_the_last_final() {
    survives_a_lost_socket(ConnectionPlan {
        recognize: true,
        close_after_bytes: Some((2 * BLOCK_BYTES + BLOCK_BYTES / 2, 1011, "NET-0001".into())),
        ..Default::default()
    });
}

#[test]
fn a_401_at_the_handshake_fails_open_once_without_retries() {
    let stand_in = DeepgramStandIn::start(Plan {
        key: KEY.into(),
        ..Default::default()
    });
    let wrong = "dg-wrong-key-98765";
    let engine =
        DeepgramEngine::new(DeepgramConfig::new(wrong).with_base_url(stand_in.url())).unwrap();
    let started = Instant::now();
    let error = engine
        .open(&SessionSpec::new("m1", "mic"))
        .err()
        .expect("open must fail");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    let EngineError::Unauthorized(message) = &error else {
        panic!("not Unauthorized: {error:?}");
    };
    assert!(
        message.contains("401") && message.contains("DEEPGRAM_API_KEY"),
        "{message}"
    );
    assert!(
        !message.contains(wrong),
        "the key is in the error: {message}"
    );
    assert!(!error.is_retryable());
    sleep(Duration::from_millis(300));
    assert_eq!(stand_in.connections().len(), 1, "exactly one attempt");
}

#[test]
fn reconnects_are_bounded_then_the_session_fails_retryably() {
    let stand_in = DeepgramStandIn::start(Plan {
        key: KEY.into(),
        connections: vec![ConnectionPlan {
            drop_after_bytes: Some(BLOCK_BYTES),
            ..Default::default()
        }],
        refuse_from: Some((1, 503)),
        ..Default::default()
    });
    let mut config = config(&stand_in);
    config.reconnect_attempts = 3;
    let mut session = open(config, SessionSpec::new("m1", "mic"));
    session.push(&coded_audio(&[1, 2])).unwrap();
    let deadline = Instant::now() + PATIENCE;
    let error = loop {
        match session.poll() {
            Err(error) => break error,
            Ok(_) if Instant::now() > deadline => panic!("the session never failed"),
            Ok(_) => sleep(Duration::from_millis(10)),
        }
    };
    assert!(error.is_retryable(), "{error:?}");
    assert!(
        error.to_string().contains("3 reconnect attempts"),
        "{error}"
    );
    assert_eq!(stand_in.connections().len(), 1 + 3);
    assert!(matches!(session.poll(), Err(EngineError::Closed)));
}
