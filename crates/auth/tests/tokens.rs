//! Verification and issuance through the public API, with tokens minted by jwt-simple directly or
//! built by hand (the ones no honest library would produce).

use earshot_auth::{
    AuthError, ConfigError, IssueError, IssueRequest, Issuer, KeyAlgorithm, MeetingGrant, Scope,
    Verifier, CLOCK_LEEWAY_S, DEFAULT_AUDIENCE, MAX_TOKEN_BYTES,
};
use jwt_simple::prelude::{
    Audiences, Base64UrlSafeNoPadding, Duration, ECDSAP256KeyPairLike, ES256KeyPair,
    Ed25519KeyPair, EdDSAKeyPairLike, HS256Key, HS512Key, JWTClaims, MACLike,
};
use jwt_simple::reexports::ct_codecs::Encoder;
use serde_json::{json, Map, Value};

const SECRET: &str = "0123456789abcdef0123456789abcdef-test-secret";
const NOW: u64 = 1_700_000_000;

fn verifier() -> Verifier {
    Verifier::from_settings("HS256", SECRET, "", "earshot").unwrap()
}

fn issuer() -> Issuer {
    Issuer::from_settings(SECRET, "earshot").unwrap()
}

fn request(scope: &str, meetings: &[&str]) -> IssueRequest {
    IssueRequest {
        sub: "agent-1".into(),
        scope: scope.into(),
        meetings: meetings.iter().map(|m| m.to_string()).collect(),
        ttl_s: Some(600),
    }
}

/// Claims with registered fields set as given and everything else from `extra` (raw JSON, so
/// wrong types can be written).
fn claims(exp: Option<u64>, sub: Option<&str>, extra: Value) -> JWTClaims<Map<String, Value>> {
    JWTClaims {
        issued_at: Some(Duration::from_secs(NOW)),
        expires_at: exp.map(Duration::from_secs),
        invalid_before: None,
        issuer: None,
        subject: sub.map(str::to_owned),
        audiences: Some(Audiences::AsString("earshot".into())),
        jwt_id: Some("jti-1".into()),
        nonce: None,
        custom: extra.as_object().cloned().unwrap_or_default(),
    }
}

fn hs256(claims: JWTClaims<Map<String, Value>>) -> String {
    HS256Key::from_bytes(SECRET.as_bytes())
        .authenticate(claims)
        .unwrap()
}

fn good_extra() -> Value {
    json!({"scope": "ingest subscribe", "meetings": ["m1"]})
}

fn b64(bytes: &[u8]) -> String {
    Base64UrlSafeNoPadding::encode_to_string(bytes).unwrap()
}

/// A token assembled from raw header and payload JSON, with the given signature segment.
fn hand_built(header: Value, payload: Value, signature: &str) -> String {
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        b64(payload.to_string().as_bytes()),
        signature
    )
}

fn valid_payload() -> Value {
    json!({"sub": "agent-1", "exp": NOW + 600, "aud": "earshot", "scope": "ingest", "meetings": ["*"]})
}

#[test]
fn hs256_round_trip() {
    let issued = issuer()
        .issue(
            &request("subscribe ingest", &["m1", "m2"]),
            NOW,
            86_400,
            "jti-abc".into(),
        )
        .unwrap();
    assert_eq!(issued.exp, NOW + 600);
    assert_eq!(issued.iat, NOW);
    let t = verifier().verify(&issued.token, NOW + 1).unwrap();
    assert_eq!(t.sub, "agent-1");
    assert_eq!(t.jti.as_deref(), Some("jti-abc"));
    assert_eq!(t.exp, NOW + 600);
    assert_eq!(t.iat, Some(NOW));
    assert_eq!(t.aud, "earshot");
    assert_eq!(t.scopes, vec![Scope::Ingest, Scope::Subscribe]);
    assert_eq!(
        t.meetings,
        MeetingGrant::Only(vec!["m1".into(), "m2".into()])
    );
    assert_eq!(t.revocation_key().as_deref(), Some("revoked:jti-abc"));
    assert!(
        !format!("{issued:?}").contains(&issued.token),
        "Debug must hide the token"
    );
}

#[test]
fn ttl_is_capped_and_defaulted() {
    let mut req = request("ingest", &["m1"]);
    req.ttl_s = Some(10_000_000);
    let issued = issuer().issue(&req, NOW, 3_600, "j".into()).unwrap();
    assert_eq!(issued.exp, NOW + 3_600);
    req.ttl_s = None;
    let issued = issuer().issue(&req, NOW, 86_400, "j".into()).unwrap();
    assert_eq!(issued.exp, NOW + earshot_auth::DEFAULT_TOKEN_TTL_S);
    req.ttl_s = Some(0);
    assert_eq!(
        issuer().issue(&req, NOW, 86_400, "j".into()),
        Err(IssueError::InvalidField("ttl_s"))
    );
}

#[test]
fn issue_rejects_bad_requests() {
    let iss = issuer();
    let issue = |req: IssueRequest| iss.issue(&req, NOW, 86_400, "j".into()).map(|_| ());
    assert_eq!(
        issue(request("ingest root", &["m1"])),
        Err(IssueError::InvalidField("scope"))
    );
    assert_eq!(
        issue(request("", &["m1"])),
        Err(IssueError::InvalidField("scope"))
    );
    assert_eq!(
        issue(request("ingest", &["bad id"])),
        Err(IssueError::InvalidField("meetings"))
    );
    assert_eq!(
        issue(request("ingest", &[""])),
        Err(IssueError::InvalidField("meetings"))
    );
    for traversal in [".", ".."] {
        assert_eq!(
            issue(request("ingest", &[traversal])),
            Err(IssueError::InvalidField("meetings")),
            "{traversal}"
        );
    }
    let mut req = request("ingest", &["m1"]);
    req.sub = " ".into();
    assert_eq!(issue(req), Err(IssueError::InvalidField("sub")));
    let many: Vec<String> = (0..200).map(|i| format!("meeting-{i:0>60}")).collect();
    let req = IssueRequest {
        meetings: many,
        ..request("ingest", &[])
    };
    assert_eq!(issue(req), Err(IssueError::TooLarge));
    assert_eq!(
        iss.issue(&request("ingest", &["m1"]), NOW, 86_400, String::new())
            .map(|_| ()),
        Err(IssueError::InvalidField("jti"))
    );
}

#[test]
fn star_meeting_grants_all() {
    let issued = issuer()
        .issue(&request("subscribe", &["*", "m1"]), NOW, 86_400, "j".into())
        .unwrap();
    let t = verifier().verify(&issued.token, NOW).unwrap();
    assert_eq!(t.meetings, MeetingGrant::All);
    assert_eq!(t.authorize(Scope::Subscribe, Some("any-meeting")), Ok(()));
}

#[test]
fn expired_token_rejected_after_leeway() {
    let token = hs256(claims(Some(NOW - 60), Some("a"), good_extra()));
    assert_eq!(verifier().verify(&token, NOW), Err(AuthError::Expired));
    let token = hs256(claims(Some(NOW), Some("a"), good_extra()));
    assert!(verifier().verify(&token, NOW + CLOCK_LEEWAY_S).is_ok());
    assert_eq!(
        verifier().verify(&token, NOW + CLOCK_LEEWAY_S + 1),
        Err(AuthError::Expired)
    );
}

#[test]
fn nbf_in_future_rejected() {
    let mut c = claims(Some(NOW + 600), Some("a"), good_extra());
    c.invalid_before = Some(Duration::from_secs(NOW + 60));
    let token = hs256(c);
    assert_eq!(verifier().verify(&token, NOW), Err(AuthError::NotYetValid));
    assert!(verifier().verify(&token, NOW + 60 - CLOCK_LEEWAY_S).is_ok());
}

#[test]
fn iat_in_future_rejected() {
    let mut c = claims(Some(NOW + 600), Some("a"), good_extra());
    c.issued_at = Some(Duration::from_secs(NOW + 60));
    assert_eq!(
        verifier().verify(&hs256(c), NOW),
        Err(AuthError::NotYetValid)
    );
}

#[test]
fn wrong_audience_rejected() {
    let mut c = claims(Some(NOW + 600), Some("a"), good_extra());
    c.audiences = Some(Audiences::AsString("someone-else".into()));
    let token = hs256(c);
    assert_eq!(
        verifier().verify(&token, NOW),
        Err(AuthError::WrongAudience)
    );

    let other = Verifier::from_settings("HS256", SECRET, "", "prod").unwrap();
    let issued = issuer()
        .issue(&request("ingest", &["m1"]), NOW, 600, "j".into())
        .unwrap();
    assert_eq!(
        other.verify(&issued.token, NOW),
        Err(AuthError::WrongAudience)
    );
}

#[test]
fn missing_aud_means_default_audience() {
    let mut c = claims(Some(NOW + 600), Some("a"), good_extra());
    c.audiences = None;
    let token = hs256(c);
    assert_eq!(verifier().audience(), DEFAULT_AUDIENCE);
    assert!(verifier().verify(&token, NOW).is_ok());
    let other = Verifier::from_settings("HS256", SECRET, "", "prod").unwrap();
    assert_eq!(other.verify(&token, NOW), Err(AuthError::WrongAudience));
}

#[test]
fn audience_set_containing_ours_accepted() {
    let mut c = claims(Some(NOW + 600), Some("a"), good_extra());
    c.audiences = Some(Audiences::AsSet(
        ["earshot".to_string(), "other".to_string()]
            .into_iter()
            .collect(),
    ));
    assert!(verifier().verify(&hs256(c), NOW).is_ok());
}

#[test]
fn wrong_secret_rejected() {
    let token = HS256Key::from_bytes(b"another-secret-that-is-32-bytes-long!!")
        .authenticate(claims(Some(NOW + 600), Some("a"), good_extra()))
        .unwrap();
    assert_eq!(verifier().verify(&token, NOW), Err(AuthError::BadSignature));
}

#[test]
fn tampered_signature_and_payload_rejected() {
    let token = hs256(claims(Some(NOW + 600), Some("a"), good_extra()));
    let (head, sig) = token.rsplit_once('.').unwrap();
    let mut sig = sig.to_owned();
    let first = if sig.starts_with('A') { "B" } else { "A" };
    sig.replace_range(0..1, first);
    assert_eq!(
        verifier().verify(&format!("{head}.{sig}"), NOW),
        Err(AuthError::BadSignature)
    );

    // Swap in a payload granting every meeting, keep the original signature.
    let parts: Vec<&str> = token.split('.').collect();
    let forged_payload = b64(
        json!({"sub": "a", "exp": NOW + 600, "aud": "earshot", "scope": "admin", "meetings": ["*"]})
            .to_string()
            .as_bytes(),
    );
    let forged = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
    assert_eq!(
        verifier().verify(&forged, NOW),
        Err(AuthError::BadSignature)
    );
}

#[test]
fn alg_none_rejected() {
    for alg in ["none", "None", "NONE"] {
        let token = hand_built(json!({"alg": alg, "typ": "JWT"}), valid_payload(), "");
        assert_eq!(
            verifier().verify(&token, NOW),
            Err(AuthError::AlgorithmNotAllowed),
            "{alg}"
        );
    }
}

#[test]
fn other_hmac_algorithms_with_same_secret_rejected() {
    let token = HS512Key::from_bytes(SECRET.as_bytes())
        .authenticate(claims(Some(NOW + 600), Some("a"), good_extra()))
        .unwrap();
    assert_eq!(
        verifier().verify(&token, NOW),
        Err(AuthError::AlgorithmNotAllowed)
    );
    let token = jwt_simple::prelude::HS384Key::from_bytes(SECRET.as_bytes())
        .authenticate(claims(Some(NOW + 600), Some("a"), good_extra()))
        .unwrap();
    assert_eq!(
        verifier().verify(&token, NOW),
        Err(AuthError::AlgorithmNotAllowed)
    );
}

#[test]
fn asymmetric_token_rejected_by_hs256_verifier() {
    let pair = Ed25519KeyPair::generate();
    let token = pair
        .sign(claims(Some(NOW + 600), Some("a"), good_extra()))
        .unwrap();
    assert_eq!(
        verifier().verify(&token, NOW),
        Err(AuthError::AlgorithmNotAllowed)
    );
}

#[test]
fn eddsa_public_key_round_trip_and_hs256_confusion() {
    let pair = Ed25519KeyPair::generate();
    let pem = pair.public_key().to_pem();
    let v = Verifier::from_settings("EdDSA", "", &pem, "").unwrap();
    assert_eq!(v.algorithm(), KeyAlgorithm::EdDsa);
    let token = pair
        .sign(claims(Some(NOW + 600), Some("a"), good_extra()))
        .unwrap();
    let t = v.verify(&token, NOW).unwrap();
    assert_eq!(t.scopes, vec![Scope::Ingest, Scope::Subscribe]);

    // Classic key confusion: HS256 keyed with the (public) PEM text.
    let confused = HS256Key::from_bytes(pem.as_bytes())
        .authenticate(claims(Some(NOW + 600), Some("a"), good_extra()))
        .unwrap();
    assert_eq!(
        v.verify(&confused, NOW),
        Err(AuthError::AlgorithmNotAllowed)
    );

    // A different Ed25519 key does not verify.
    let stranger = Ed25519KeyPair::generate()
        .sign(claims(Some(NOW + 600), Some("a"), good_extra()))
        .unwrap();
    assert_eq!(v.verify(&stranger, NOW), Err(AuthError::BadSignature));

    // PEM with literal `\n` (as environment variables carry it) is accepted.
    let escaped = pem.trim().replace('\n', "\\n");
    assert!(Verifier::from_settings("eddsa", "", &escaped, "").is_ok());
}

#[test]
fn es256_public_key_round_trip() {
    let pair = ES256KeyPair::generate();
    let pem = pair.public_key().to_pem().unwrap();
    let v = Verifier::from_settings("ES256", "", &pem, "earshot").unwrap();
    let token = pair
        .sign(claims(Some(NOW + 600), Some("a"), good_extra()))
        .unwrap();
    assert_eq!(v.verify(&token, NOW).unwrap().sub, "a");
    let ed = Ed25519KeyPair::generate()
        .sign(claims(Some(NOW + 600), Some("a"), good_extra()))
        .unwrap();
    assert_eq!(v.verify(&ed, NOW), Err(AuthError::AlgorithmNotAllowed));
}

#[test]
fn meetings_of_wrong_type_rejected() {
    for meetings in [
        json!("m1"),
        json!("*"),
        json!({"m1": true}),
        json!(null),
        json!([1, 2]),
        json!(42),
    ] {
        let token = hs256(claims(
            Some(NOW + 600),
            Some("a"),
            json!({"scope": "ingest", "meetings": meetings}),
        ));
        assert_eq!(
            verifier().verify(&token, NOW),
            Err(AuthError::InvalidClaim("meetings")),
            "{meetings}"
        );
    }
}

#[test]
fn missing_exp_and_sub_rejected() {
    let token = hs256(claims(None, Some("a"), good_extra()));
    assert_eq!(
        verifier().verify(&token, NOW),
        Err(AuthError::MissingClaim("exp"))
    );
    let token = hs256(claims(Some(NOW + 600), None, good_extra()));
    assert_eq!(
        verifier().verify(&token, NOW),
        Err(AuthError::MissingClaim("sub"))
    );
    let token = hs256(claims(Some(NOW + 600), Some(""), good_extra()));
    assert_eq!(
        verifier().verify(&token, NOW),
        Err(AuthError::MissingClaim("sub"))
    );
}

#[test]
fn registered_claims_of_wrong_type_named() {
    let token = hs256(claims(
        None,
        Some("a"),
        json!({"exp": "tomorrow", "scope": "ingest"}),
    ));
    assert_eq!(
        verifier().verify(&token, NOW),
        Err(AuthError::InvalidClaim("exp"))
    );
    let mut c = claims(Some(NOW + 600), None, json!({"sub": 7, "scope": "ingest"}));
    c.subject = None;
    assert_eq!(
        verifier().verify(&hs256(c), NOW),
        Err(AuthError::InvalidClaim("sub"))
    );
}

#[test]
fn unknown_or_mistyped_scope_rejected() {
    let token = hs256(claims(
        Some(NOW + 600),
        Some("a"),
        json!({"scope": "ingest superuser", "meetings": ["m1"]}),
    ));
    assert_eq!(
        verifier().verify(&token, NOW),
        Err(AuthError::InvalidClaim("scope"))
    );
    let token = hs256(claims(
        Some(NOW + 600),
        Some("a"),
        json!({"scope": ["ingest"], "meetings": ["m1"]}),
    ));
    assert_eq!(
        verifier().verify(&token, NOW),
        Err(AuthError::InvalidClaim("scope"))
    );
}

#[test]
fn authorize_checks_scope_and_meeting() {
    let issued = issuer()
        .issue(&request("ingest", &["m1"]), NOW, 86_400, "j".into())
        .unwrap();
    let t = verifier().verify(&issued.token, NOW).unwrap();
    assert_eq!(t.authorize(Scope::Ingest, Some("m1")), Ok(()));
    assert_eq!(t.authorize(Scope::Ingest, None), Ok(()));
    assert_eq!(
        t.authorize(Scope::Ingest, Some("m2")),
        Err(AuthError::MeetingNotGranted)
    );
    assert_eq!(
        t.authorize(Scope::Subscribe, Some("m1")),
        Err(AuthError::ScopeNotGranted(Scope::Subscribe))
    );
    assert_eq!(
        AuthError::ScopeNotGranted(Scope::Ingest).to_string(),
        "scope not granted: ingest"
    );

    let admin = issuer()
        .issue(&request("admin", &["*"]), NOW, 86_400, "j".into())
        .unwrap();
    let t = verifier().verify(&admin.token, NOW).unwrap();
    assert_eq!(
        t.authorize(Scope::Ingest, Some("m1")),
        Err(AuthError::ScopeNotGranted(Scope::Ingest)),
        "admin does not imply ingest"
    );
}

#[test]
fn malformed_and_oversized_tokens_rejected_without_echo() {
    for junk in [
        "abc",
        "a.b",
        "a.b.c.d",
        "!!!.???.***",
        "eyJhbGciOiJIUzI1NiJ9.%%%.x",
    ] {
        let err = verifier().verify(junk, NOW).unwrap_err();
        assert_eq!(err, AuthError::Malformed, "{junk}");
    }
    assert_eq!(verifier().verify("", NOW), Err(AuthError::Missing));
    let huge = "a".repeat(MAX_TOKEN_BYTES + 1);
    assert_eq!(verifier().verify(&huge, NOW), Err(AuthError::TooLarge));

    // No error text ever contains the token.
    let token = hs256(claims(Some(NOW - 600), Some("a"), good_extra()));
    let err = verifier().verify(&token, NOW).unwrap_err();
    assert!(!err.to_string().contains(&token));
    assert!(!format!("{err:?}").contains(&token));
}

#[test]
fn config_is_validated() {
    assert!(matches!(
        Verifier::from_settings("HS256", "short", "", ""),
        Err(ConfigError::SecretTooShort { len: 5, min: 32 })
    ));
    assert!(matches!(
        Verifier::from_settings("RS256", SECRET, "", ""),
        Err(ConfigError::UnsupportedAlgorithm(_))
    ));
    assert!(matches!(
        Verifier::from_settings("none", SECRET, "", ""),
        Err(ConfigError::UnsupportedAlgorithm(_))
    ));
    assert_eq!(
        Verifier::from_settings("EdDSA", SECRET, "", "").unwrap_err(),
        ConfigError::MissingPublicKey("EdDSA")
    );
    assert_eq!(
        Verifier::from_settings(
            "ES256",
            "",
            "-----BEGIN PUBLIC KEY-----\nxx\n-----END PUBLIC KEY-----",
            ""
        )
        .unwrap_err(),
        ConfigError::InvalidPublicKey("ES256")
    );
    assert_eq!(
        Verifier::from_settings("", SECRET, "", "")
            .unwrap()
            .algorithm(),
        KeyAlgorithm::Hs256
    );
    assert!(Issuer::from_settings("short", "").is_err());
    assert!(!format!("{:?}", verifier()).contains(SECRET));
}

#[test]
fn error_reasons_are_the_contract_strings() {
    let cases = [
        (AuthError::Missing, "missing token"),
        (AuthError::Ambiguous, "ambiguous token"),
        (AuthError::Malformed, "malformed token"),
        (AuthError::BadSignature, "bad signature"),
        (AuthError::AlgorithmNotAllowed, "algorithm not allowed"),
        (AuthError::Expired, "token expired"),
        (AuthError::NotYetValid, "token not yet valid"),
        (AuthError::WrongAudience, "wrong audience"),
        (AuthError::MissingClaim("exp"), "missing claim: exp"),
        (
            AuthError::InvalidClaim("meetings"),
            "invalid claim: meetings",
        ),
        (AuthError::MeetingNotGranted, "meeting not granted"),
        (AuthError::Revoked, "token revoked"),
        (AuthError::TooLarge, "token too large"),
    ];
    for (err, text) in cases {
        assert_eq!(err.to_string(), text);
    }
}

#[test]
fn verified_token_serializes_as_introspection_claims() {
    let issued = issuer()
        .issue(
            &request("subscribe ingest", &["m1"]),
            NOW,
            86_400,
            "j".into(),
        )
        .unwrap();
    let t = verifier().verify(&issued.token, NOW).unwrap();
    assert_eq!(
        serde_json::to_value(&t).unwrap(),
        json!({"sub": "agent-1", "jti": "j", "exp": NOW + 600, "iat": NOW, "aud": "earshot",
               "scope": "ingest subscribe", "meetings": ["m1"]})
    );
    assert_eq!(
        serde_json::to_value(&issued).unwrap(),
        json!({"token": issued.token, "jti": "j", "exp": NOW + 600, "iat": NOW})
    );
}
