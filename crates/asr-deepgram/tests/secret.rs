//! The API key never reaches a log record: every `log` record of every crate (tungstenite
//! logs whole handshake requests at trace level) is captured at the most verbose level
//! while a session opens, streams and closes against the stand-in. A test binary of its
//! own, because a process has one `log` logger.

mod stand_in;

use std::sync::Mutex;

use earshot_asr_deepgram::{DeepgramConfig, DeepgramEngine};
use earshot_asr_engine::{Engine, SessionSpec};
use stand_in::{DeepgramStandIn, Plan};

const KEY: &str = "secret-key-never-logged-4242";

static RECORDS: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        RECORDS
            .lock()
            .unwrap()
            .push(format!("{} {}", record.target(), record.args()));
    }
    fn flush(&self) {}
}

#[test]
fn no_log_record_carries_the_key() {
    log::set_logger(&Capture).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    let stand_in = DeepgramStandIn::start(Plan {
        key: KEY.into(),
        ..Default::default()
    });
    let engine =
        DeepgramEngine::new(DeepgramConfig::new(KEY).with_base_url(stand_in.url())).unwrap();
    let mut session = engine.open(&SessionSpec::new("m1", "mic")).unwrap();
    session.push(&[0u8; 3_200]).unwrap();
    session.flush().unwrap();
    let records = RECORDS.lock().unwrap().clone();
    assert!(
        !records.is_empty(),
        "the capture saw nothing: the test would prove nothing"
    );
    let leaks: Vec<&String> = records.iter().filter(|r| r.contains(KEY)).collect();
    assert!(leaks.is_empty(), "the key is in log records: {leaks:?}");
}
