//! Token lifecycle through the real auth.wasm: issue → introspect → revoke, and every
//! kind of bad token refused with its reason.

use std::time::{SystemTime, UNIX_EPOCH};

use earshot_auth::{IssueRequest, Issuer};
use earshot_testkit::{earshot, Earshot};
use jwt_simple::prelude::*;
use serde_json::{json, Value};

fn post(server: &Earshot, path: &str, admin: Option<&str>, body: Value) -> (u16, Value) {
    let client = reqwest::blocking::Client::new();
    let mut req = client.post(server.url(path)).json(&body);
    if let Some(key) = admin {
        req = req.bearer_auth(key);
    }
    let resp = req.send().expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(Value::Null))
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn request(sub: &str) -> IssueRequest {
    IssueRequest { sub: sub.into(), scope: "ingest subscribe".into(), meetings: vec!["m1".into()], ttl_s: Some(600) }
}

fn b64(bytes: &[u8]) -> String {
    use ct_codecs::{Base64UrlSafeNoPadding, Encoder};
    Base64UrlSafeNoPadding::encode_to_string(bytes).unwrap()
}

#[test]
fn issue_introspect_revoke_introspect() {
    let server = earshot!().start().unwrap();
    let (admin, _) = server.dev_secrets().unwrap();

    let (status, issued) = post(
        &server,
        "/api/v1/auth/token",
        Some(&admin),
        json!({"sub": "agent-7", "scope": "ingest", "meetings": ["m1"], "ttl_s": 600}),
    );
    assert_eq!(status, 200, "{issued}");
    let token = issued["token"].as_str().unwrap().to_owned();
    let jti = issued["jti"].as_str().unwrap().to_owned();

    let (status, info) = post(&server, "/api/v1/auth/introspect", None, json!({"token": token}));
    assert_eq!(status, 200);
    assert_eq!(info["active"], true, "{info}");
    assert_eq!(info["sub"], "agent-7");
    assert_eq!(info["scope"], "ingest");
    assert_eq!(info["meetings"], json!(["m1"]));
    assert_eq!(info["aud"], "earshot");

    let (status, revoked) = post(&server, "/api/v1/auth/revoke", Some(&admin), json!({"jti": jti}));
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(revoked["revoked"], true);
    assert_eq!(revoked["until"], issued["exp"], "kept until the token's exp");

    let (_, info) = post(&server, "/api/v1/auth/introspect", None, json!({"token": token}));
    assert_eq!(info, json!({"active": false, "reason": "token revoked"}));

    // Tokens never reach the log.
    let logs = server.logs().join("\n");
    assert!(!logs.contains(&token), "a token leaked into the logs");
    assert!(!logs.contains(&admin), "the admin key leaked into the logs");
}

#[test]
fn token_issue_needs_the_admin_key_and_caps_ttl() {
    let server = earshot!().start().unwrap();
    let (admin, _) = server.dev_secrets().unwrap();
    let body = json!({"sub": "a", "scope": "ingest", "meetings": ["m1"], "ttl_s": 10_000_000});
    assert_eq!(post(&server, "/api/v1/auth/token", None, body.clone()).0, 401);
    assert_eq!(post(&server, "/api/v1/auth/token", Some("wrong-key"), body.clone()).0, 401);
    let (status, issued) = post(&server, "/api/v1/auth/token", Some(&admin), body);
    assert_eq!(status, 200);
    let ttl = issued["exp"].as_u64().unwrap() - issued["iat"].as_u64().unwrap();
    assert_eq!(ttl, 86_400, "ttl capped at max_token_ttl_s");
    let (status, err) = post(&server, "/api/v1/auth/token", Some(&admin), json!({"sub": "a", "scope": "root"}));
    assert_eq!(status, 400, "{err}");
}

#[test]
fn bad_tokens_are_refused_with_their_reason() {
    let server = earshot!().start().unwrap();
    let (_, secret) = server.dev_secrets().unwrap();
    let issuer = Issuer::from_settings(&secret, "earshot").unwrap();
    let good = issuer.issue(&request("ok"), now(), 86_400, "j-good".into()).unwrap().token;

    let expired = issuer.issue(&request("old"), now() - 7_200, 86_400, "j-old".into()).unwrap().token;
    let wrong_aud = Issuer::from_settings(&secret, "someone-else")
        .unwrap()
        .issue(&request("x"), now(), 86_400, "j-aud".into())
        .unwrap()
        .token;
    let wrong_secret = Issuer::from_settings(&"x".repeat(40), "earshot")
        .unwrap()
        .issue(&request("x"), now(), 86_400, "j-sec".into())
        .unwrap()
        .token;
    let hs512 = {
        let key = HS512Key::from_bytes(secret.as_bytes());
        let claims = Claims::with_custom_claims(json!({"scope": "ingest", "meetings": ["m1"]}), Duration::from_secs(600))
            .with_subject("x")
            .with_audience("earshot");
        key.authenticate(claims).unwrap()
    };
    let payload = json!({"sub": "x", "aud": "earshot", "exp": now() + 600, "scope": "ingest", "meetings": ["m1"]});
    let alg_none = format!("{}.{}.", b64(br#"{"alg":"none","typ":"JWT"}"#), b64(payload.to_string().as_bytes()));
    let tampered = {
        let (head, sig) = good.rsplit_once('.').unwrap();
        let mut sig: Vec<char> = sig.chars().collect();
        sig[3] = if sig[3] == 'A' { 'B' } else { 'A' };
        format!("{head}.{}", sig.into_iter().collect::<String>())
    };
    let meetings_string = {
        let key = HS256Key::from_bytes(secret.as_bytes());
        let claims = Claims::with_custom_claims(json!({"scope": "ingest", "meetings": "m1"}), Duration::from_secs(600))
            .with_subject("x")
            .with_audience("earshot");
        key.authenticate(claims).unwrap()
    };

    let (_, ok) = post(&server, "/api/v1/auth/introspect", None, json!({"token": good}));
    assert_eq!(ok["active"], true, "control: the good token is active: {ok}");
    for (name, token, reason) in [
        ("expired", expired, "token expired"),
        ("wrong aud", wrong_aud, "wrong audience"),
        ("wrong secret", wrong_secret, "bad signature"),
        ("HS512 with the same secret", hs512, "algorithm not allowed"),
        ("alg none", alg_none, "algorithm not allowed"),
        ("tampered signature", tampered, "bad signature"),
        ("meetings as a string", meetings_string, "invalid claim: meetings"),
    ] {
        let (status, info) = post(&server, "/api/v1/auth/introspect", None, json!({"token": token}));
        assert_eq!(status, 200, "{name}");
        assert_eq!(info, json!({"active": false, "reason": reason}), "{name}");
    }
}
