//! `earshot up` process lifecycle: one JSON startup line, SIGTERM drains and exits 0.

use std::time::Duration;

use earshot_testkit::earshot;

#[test]
fn startup_line_then_sigterm_exits_zero() {
    let mut server = earshot!().start().unwrap();
    let startup: serde_json::Value = server
        .logs()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "listening")
        .expect("a JSON startup line");
    assert_eq!(startup["address"], server.addr().to_string());
    let components = startup["components"].as_str().unwrap();
    assert!(components.contains("health") && components.contains("auth"), "{components}");

    // Every log line is one JSON object.
    assert_eq!(reqwest::blocking::get(server.url("/api/v1/ping")).unwrap().status().as_u16(), 200);
    let status = server.sigterm(Duration::from_secs(15)).unwrap();
    assert!(status.success(), "exit status {status}");
    for line in server.logs() {
        assert!(serde_json::from_str::<serde_json::Value>(&line).is_ok(), "not JSON: {line}");
    }
}
