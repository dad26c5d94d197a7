//! TLS on the public listener (issue 13): HTTPS and `wss://` against a certificate the
//! test generates, ALPN http/1.1, and a certificate swapped on disk taking effect for
//! new connections without a restart (file change, and SIGHUP) while an open `wss://`
//! socket keeps working.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use earshot_testkit::earshot;
use earshot_testkit::ws::token;
use futures::{SinkExt, StreamExt};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);

/// A self-signed certificate for `localhost` with common name `cn`, written as PEM.
fn certificate(dir: &Path, cn: &str) -> CertificateDer<'static> {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, cn);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    // Written aside and renamed, as certbot and cert-manager do, so no half file is read.
    for (name, text) in [("key.pem", key.serialize_pem()), ("cert.pem", cert.pem())] {
        let tmp = dir.join(format!("{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
    cert.der().clone()
}

/// A client trusting exactly `roots`, offering ALPN http/1.1.
fn client(roots: &[&CertificateDer<'static>]) -> Arc<rustls::ClientConfig> {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add((*r).clone()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// One HTTPS GET; returns the certificate the server presented, the ALPN protocol and the response.
async fn https_get(port: u16, config: Arc<rustls::ClientConfig>, path: &str) -> (CertificateDer<'static>, Option<Vec<u8>>, String) {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(config);
    let mut tls = tokio::time::timeout(WAIT, connector.connect(ServerName::try_from("localhost").unwrap(), tcp))
        .await
        .expect("handshake in time")
        .expect("TLS handshake");
    let (_, session) = tls.get_ref();
    let presented = session.peer_certificates().expect("a certificate")[0].clone().into_owned();
    let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
    tls.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut resp = Vec::new();
    let _ = tokio::time::timeout(WAIT, tls.read_to_end(&mut resp)).await.expect("response in time");
    (presented, alpn, String::from_utf8_lossy(&resp).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn https_and_wss_work_and_a_reloaded_certificate_is_served_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = certificate(dir.path(), "earshot first");
    let server = earshot!()
        .env("EARSHOT_TLS_CERT", dir.path().join("cert.pem").to_str().unwrap())
        .env("EARSHOT_TLS_KEY", dir.path().join("key.pem").to_str().unwrap())
        .start()
        .unwrap();
    let port = server.addr().port();

    // HTTPS: the generated certificate, ALPN http/1.1, the app's route.
    let (presented, alpn, resp) = https_get(port, client(&[&first]), "/api/v1/ping").await;
    assert_eq!(presented, first);
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert!(resp.starts_with("HTTP/1.1 200") && resp.contains(r#""status":"ok""#), "{resp}");

    // Plain HTTP on the TLS port gets nothing served.
    let mut plain = TcpStream::connect(server.addr()).await.unwrap();
    plain.write_all(b"GET /api/v1/ping HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(WAIT, plain.read_to_end(&mut got)).await.expect("plain HTTP closed");
    assert!(!String::from_utf8_lossy(&got).contains("200 OK"), "plain HTTP served on the TLS port");

    // wss://: a subscriber over TLS.
    let (_, secret) = server.dev_secrets().unwrap();
    let url = format!("wss://localhost:{port}/api/v1/ws/meetings/tls?token={}", token(&secret, "subscribe", &["tls"]));
    let both = {
        let second_dir = tempfile::tempdir().unwrap();
        let second = certificate(second_dir.path(), "earshot second");
        (second_dir, second)
    };
    let (second_dir, second) = both;
    let connector = tokio_tungstenite::Connector::Rustls(client(&[&first, &second]));
    let (mut ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async_tls_with_config(url.as_str(), None, false, Some(connector.clone())))
        .await
        .expect("wss in time")
        .expect("wss upgrade");
    ws.send(Message::Ping(b"before".to_vec().into())).await.unwrap();
    expect_pong(&mut ws, b"before").await;

    // Swap the files for the second certificate: new handshakes get it.
    for name in ["cert.pem", "key.pem"] {
        let tmp = dir.path().join(format!("{name}.new"));
        std::fs::copy(second_dir.path().join(name), &tmp).unwrap();
        std::fs::rename(&tmp, dir.path().join(name)).unwrap();
    }
    let deadline = Instant::now() + WAIT;
    loop {
        let (presented, _, resp) = https_get(port, client(&[&first, &second]), "/api/v1/ping").await;
        if presented == second {
            assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
            break;
        }
        assert_eq!(presented, first, "neither certificate");
        assert!(Instant::now() < deadline, "the new certificate was never served");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(server.logs().iter().any(|l| l.contains("tls_reloaded")), "no reload line");
    // A client trusting only the old certificate is now refused at the handshake.
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let only_first = tokio_rustls::TlsConnector::from(client(&[&first]));
    assert!(only_first.connect(ServerName::try_from("localhost").unwrap(), tcp).await.is_err());

    // The socket opened before the reload lives on, and a new wss:// one opens.
    ws.send(Message::Ping(b"after".to_vec().into())).await.unwrap();
    expect_pong(&mut ws, b"after").await;
    let (mut again, _) = tokio_tungstenite::connect_async_tls_with_config(url.as_str(), None, false, Some(connector)).await.expect("wss after the reload");
    again.send(Message::Ping(b"new".to_vec().into())).await.unwrap();
    expect_pong(&mut again, b"new").await;

    // A broken file keeps the served certificate (and says why in the log).
    std::fs::write(dir.path().join("cert.pem"), "not a certificate").unwrap();
    let deadline = Instant::now() + WAIT;
    while !server.logs().iter().any(|l| l.contains("tls_reload_failed")) {
        assert!(Instant::now() < deadline, "no failed-reload line");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (presented, _, _) = https_get(port, client(&[&first, &second]), "/api/v1/ping").await;
    assert_eq!(presented, second);

    // SIGHUP reloads too (the files put right again, then the signal at once).
    std::fs::copy(second_dir.path().join("cert.pem"), dir.path().join("cert.pem")).unwrap();
    let pid = earshot_pid(server.state_dir());
    let sent = std::process::Command::new("kill").args(["-HUP", &pid.to_string()]).status().unwrap();
    assert!(sent.success());
    let deadline = Instant::now() + WAIT;
    while !server.logs().iter().any(|l| l.contains("tls_reloaded") && l.contains("sighup")) {
        assert!(Instant::now() < deadline, "no reload on SIGHUP:\n{}", server.logs().join("\n"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The pid of the `earshot up` child whose command line names `state_dir`.
fn earshot_pid(state_dir: &Path) -> u32 {
    let needle = state_dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&needle) && String::from_utf8_lossy(&c).contains("up"))
                .unwrap_or(false)
        })
        .expect("the earshot process")
}

async fn expect_pong<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>, payload: &[u8])
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.expect("pong in time") {
            Some(Ok(Message::Pong(p))) if p.as_ref() == payload => return,
            Some(Ok(_)) => continue,
            other => panic!("no pong: {other:?}"),
        }
    }
}
