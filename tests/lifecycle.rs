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

/// Embedded defaults without `--redis`: `earshot up` runs a private `redis-server`
/// (its own port, data under the state folder), says so in the startup line, stores
/// through it, and stops it on SIGTERM.
#[test]
fn embedded_defaults_run_a_private_redis_stopped_with_the_server() {
    let mut server = earshot!().private_redis().start().unwrap();
    let startup: serde_json::Value = server
        .logs()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "listening")
        .expect("a JSON startup line");
    let redis = startup["redis"].as_str().unwrap_or_default().to_owned();
    assert!(redis.ends_with("(private)"), "startup line names the private Redis: {startup}");
    let port: u16 = redis.trim_start_matches("redis://127.0.0.1:").trim_end_matches(" (private)").parse().unwrap();
    let health: serde_json::Value = reqwest::blocking::get(server.url("/api/v1/health")).unwrap().json().unwrap();
    assert_eq!(health["redis"], "ok", "{health}");
    assert!(server.state_dir().join("redis").is_dir(), "its data lives under the state folder");

    let status = server.sigterm(Duration::from_secs(15)).unwrap();
    assert!(status.success(), "exit status {status}");
    // The child is gone with the server: nothing answers on its port any more.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(std::time::Instant::now() < deadline, "the private redis-server outlived earshot");
        std::thread::sleep(Duration::from_millis(20));
    }
}
