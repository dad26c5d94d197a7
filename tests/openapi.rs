//! docs/openapi.json kept true (issue 13): it is OpenAPI 3.1 with every `$ref` resolving;
//! its paths are exactly the HTTP routes the manifests give the components (WebSocket
//! routes are the relay's and in protocol.md; the internal endpoints are not public);
//! every documented operation is served and answers a status the document lists; and
//! the app serves the document itself at `/api/v1/openapi.json`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use earshot_protocol::ids::WS_PREFIX;
use earshot_testkit::{earshot, repo_root};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

/// The internal listener's paths: never in the public document.
const INTERNAL_PATHS: [&str; 2] = ["/publish/", "/metrics"];

fn spec() -> Value {
    let text = std::fs::read_to_string(repo_root().join("docs/openapi.json")).unwrap();
    serde_json::from_str(&text).expect("docs/openapi.json is JSON")
}

fn paths(spec: &Value) -> Vec<String> {
    spec["paths"].as_object().expect("paths").keys().cloned().collect()
}

/// Every `[[trigger.http]] route` of a manifest.
fn manifest_routes(file: &str) -> Vec<String> {
    let text = std::fs::read_to_string(repo_root().join(file)).unwrap();
    let manifest: toml::Value = toml::from_str(&text).unwrap();
    manifest["trigger"]["http"]
        .as_array()
        .expect("HTTP triggers")
        .iter()
        .map(|t| t["route"].as_str().expect("route").to_owned())
        .collect()
}

/// Whether manifest `route` (exact, or `prefix/...`) serves document `path`.
fn serves(route: &str, path: &str) -> bool {
    match route.strip_suffix("...") {
        Some(prefix) => path.starts_with(prefix),
        None => route == path,
    }
}

fn resolve<'a>(spec: &'a Value, reference: &str) -> Option<&'a Value> {
    spec.pointer(reference.strip_prefix('#')?)
}

fn check_refs(spec: &Value, node: &Value, bad: &mut Vec<String>) {
    match node {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref") {
                if resolve(spec, r).is_none() {
                    bad.push(r.clone());
                }
            }
            map.values().for_each(|v| check_refs(spec, v, bad));
        }
        Value::Array(items) => items.iter().for_each(|v| check_refs(spec, v, bad)),
        _ => {}
    }
}

#[test]
fn the_document_is_openapi_3_1_with_unique_operations_and_resolving_refs() {
    let spec = spec();
    assert!(spec["openapi"].as_str().is_some_and(|v| v.starts_with("3.1.")), "openapi: {}", spec["openapi"]);
    let mut ids = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            let id = op["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path}: no operationId"));
            assert!(ids.insert(id.to_owned()), "operationId {id} twice");
            let responses = op["responses"].as_object().unwrap_or_else(|| panic!("{method} {path}: no responses"));
            assert!(responses.keys().any(|s| s.starts_with('2')), "{method} {path}: no success response");
        }
    }
    assert!(ids.len() >= 10, "only {} operations", ids.len());
    let mut bad = Vec::new();
    check_refs(&spec, &spec, &mut bad);
    assert!(bad.is_empty(), "unresolved $ref: {bad:?}");
}

#[test]
fn the_documented_paths_are_the_http_routes_the_manifests_serve() {
    let spec = spec();
    let documented = paths(&spec);
    for file in ["spin.toml", "spin-cloud.toml"] {
        let routes = manifest_routes(file);
        for route in &routes {
            if route.starts_with(WS_PREFIX) {
                // WebSocket upgrades: the relay's, described in docs/protocol.md.
                continue;
            }
            if route == "/..." {
                assert!(documented.iter().any(|p| p == "/"), "{file}: the page route `/` is not documented");
                continue;
            }
            assert!(documented.iter().any(|p| serves(route, p)), "{file}: route {route} has no documented path");
        }
        for path in &documented {
            let served = path == "/" || routes.iter().filter(|r| r.as_str() != "/...").any(|r| serves(r, path));
            assert!(served, "{file}: documented {path} is no component's route (only the page's catch-all would answer)");
        }
    }
    for path in &documented {
        assert!(!path.starts_with(WS_PREFIX), "{path}: WebSocket routes belong in docs/protocol.md");
        assert!(!INTERNAL_PATHS.contains(&path.as_str()), "{path} is the internal listener's");
    }
}

/// One request on its own connection; the status and body.
async fn request(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(b) = body {
        req.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", b.len()));
    }
    req.push_str("\r\n");
    req.push_str(body.unwrap_or(""));
    s.write_all(req.as_bytes()).await.unwrap();
    let mut resp = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut resp)).await.expect("response in time").unwrap();
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{method} {path}: no status in {text:?}"));
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.to_owned() };
    (status, body)
}

/// A chunked body's data.
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).expect("chunk size");
        if n == 0 {
            break;
        }
        out.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn every_documented_operation_is_served_and_the_app_serves_the_document() {
    let spec = spec();
    let server = earshot!().start_in_process().unwrap();
    let mut checked = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            // No credentials and an empty object: every route answers without a 404
            // (a route that is not there) or 405 (a method it does not take).
            let concrete = path.replace("{id}", "openapi-m1");
            let body = op.get("requestBody").map(|_| "{}");
            let (status, text) = request(server.addr(), &method.to_ascii_uppercase(), &concrete, body).await;
            assert!(status != 404 && status != 405, "{method} {concrete}: {status} {text}");
            assert!(
                op["responses"].get(status.to_string()).is_some(),
                "{method} {concrete} answered {status}, which the document does not list: {text}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 12, "only {checked} operations checked");

    let (status, served) = request(server.addr(), "GET", "/api/v1/openapi.json", None).await;
    assert_eq!(status, 200);
    let served: Value = serde_json::from_str(&served).expect("served document is JSON");
    assert_eq!(served, spec, "the served document is not docs/openapi.json");
}
