//! The WebSocket-over-HTTP request of one connection: the client's handshake replayed,
//! `Connection-Id`, `Meta-*` state, `Grip-Sig`, and a batch of events as the body.

use std::collections::BTreeMap;

use bytes::Bytes;
use earshot_protocol::events::{encode_events, Event, CONTENT_TYPE};

use crate::RelayShared;

/// The parts of the client's handshake replayed on every backend request.
pub(crate) struct Template {
    pub(crate) uri: http::Uri,
    pub(crate) headers: http::HeaderMap,
}

/// Reads `Set-Meta-*` headers of a backend response into `meta`.
pub(crate) fn apply_set_meta(headers: &http::HeaderMap, meta: &mut BTreeMap<String, String>) {
    for (name, value) in headers {
        if let Some(key) = name.as_str().strip_prefix("set-meta-") {
            if let Ok(v) = value.to_str() {
                meta.insert(key.to_owned(), v.to_owned());
            }
        }
    }
}

/// Builds one backend request carrying `events`.
pub(crate) fn build_request(
    shared: &RelayShared,
    template: &Template,
    connection_id: &str,
    meta: &BTreeMap<String, String>,
    events: &[Event],
) -> http::Request<Bytes> {
    let mut req = http::Request::new(Bytes::from(encode_events(events)));
    *req.method_mut() = http::Method::POST;
    *req.uri_mut() = template.uri.clone();
    let headers = req.headers_mut();
    headers.extend(template.headers.clone());
    headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(CONTENT_TYPE));
    if let Ok(v) = http::HeaderValue::from_str(connection_id) {
        headers.insert("connection-id", v);
    }
    headers.insert("sec-websocket-extensions", http::HeaderValue::from_static("grip"));
    for (k, v) in meta {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(format!("meta-{k}").as_bytes()),
            http::HeaderValue::from_str(v),
        ) {
            headers.insert(name, value);
        }
    }
    if let Some(sig) = shared.grip_sig() {
        headers.insert("grip-sig", sig);
    }
    req
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::tests::UnusedBackend;
    use crate::{Hub, RelayConfig};
    use std::sync::Arc;

    #[test]
    fn requests_replay_the_handshake_and_carry_meta_and_events() {
        let shared = RelayShared::new(Arc::new(UnusedBackend), Hub::local(), RelayConfig::default());
        let mut headers = http::HeaderMap::new();
        headers.insert("x-forwarded-for", http::HeaderValue::from_static("10.0.0.1"));
        let template = Template { uri: "/api/v1/ws/meetings/m1?x=1".parse().unwrap(), headers };
        let mut meta = BTreeMap::new();
        let mut set = http::HeaderMap::new();
        set.insert("set-meta-user", http::HeaderValue::from_static("alice"));
        set.insert("content-type", http::HeaderValue::from_static("ignored"));
        apply_set_meta(&set, &mut meta);
        assert_eq!(meta, BTreeMap::from([("user".to_owned(), "alice".to_owned())]));

        let req = build_request(&shared, &template, "c1", &meta, &[Event::Text("hi".into())]);
        assert_eq!(req.method(), http::Method::POST);
        assert_eq!(req.uri(), "/api/v1/ws/meetings/m1?x=1");
        let h = req.headers();
        assert_eq!(h["connection-id"], "c1");
        assert_eq!(h["meta-user"], "alice");
        assert_eq!(h["x-forwarded-for"], "10.0.0.1");
        assert_eq!(h["sec-websocket-extensions"], "grip");
        assert_eq!(h["content-type"], CONTENT_TYPE);
        assert!(!h.contains_key("grip-sig"), "no key configured, no signature");
        assert_eq!(earshot_protocol::events::decode_events(req.body()).unwrap(), [Event::Text("hi".into())]);
    }

    #[test]
    fn one_grip_sig_is_signed_and_reused_across_requests() {
        use jwt_simple::prelude::*;
        let config = RelayConfig { grip_sig_key: Some("k".repeat(32)), ..RelayConfig::default() };
        let shared = RelayShared::new(Arc::new(UnusedBackend), Hub::local(), config);
        let template = Template { uri: "/api/v1/ws/meetings/m1".parse().unwrap(), headers: http::HeaderMap::new() };
        let a = build_request(&shared, &template, "c1", &BTreeMap::new(), &[]);
        let b = build_request(&shared, &template, "c2", &BTreeMap::new(), &[]);
        let (sa, sb) = (a.headers()["grip-sig"].to_str().unwrap(), b.headers()["grip-sig"].to_str().unwrap());
        assert_eq!(sa, sb, "signed once, reused");
        let claims = HS256Key::from_bytes("k".repeat(32).as_bytes()).verify_token::<NoCustomClaims>(sa, None).unwrap();
        assert_eq!(claims.issuer.as_deref(), Some("earshot"));
        let left = claims.expires_at.unwrap().as_secs().saturating_sub(Clock::now_since_epoch().as_secs());
        assert!(left > 59 * 60, "a reused signature still has most of its hour: {left} s");
    }
}
