//! Tokens: `Verifier::verify` on whatever a client presents, the claims of a token whose
//! signature checks out, `extract_token` over the three carriers, and `redact_query`.
//!
//! The first byte picks a mode (the rest is the input):
//! - `0`: the bytes are a token, verified by an HS256, an EdDSA and an ES256 verifier;
//! - `1`: the bytes are `header JSON \0 claims JSON` (or only claims, under a plain HS256
//!   header), signed with the verifier's secret so the claim checks are reached;
//! - `2`: the bytes are `flags, query \0 authorization \0 sec-websocket-protocol`, the
//!   carriers a request offers (a flag bit per carrier says whether it is present).
//!
//! Properties: nothing panics; a verified token's claims are consistent (non-empty `sub`,
//! `exp` not long past, scopes sorted and unique); `extract_token` hands back a non-empty
//! token within `MAX_TOKEN_BYTES`; after `redact_query`, no `token` parameter keeps its value.
#![no_main]

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use earshot_auth::{extract_token, redact_query, Scope, Verifier, CLOCK_LEEWAY_S, MAX_TOKEN_BYTES, REDACTED, TOKEN_QUERY_PARAM};
use hmac::{Hmac, Mac};
use jwt_simple::prelude::{ES256KeyPair, Ed25519PublicKey};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;

/// The HS256 secret of the verifier (and of the seed tokens in `corpus/token_verify`).
const SECRET: &str = "0123456789abcdef0123456789abcdef-fuzz-secret";
/// The verifier's clock; the seed tokens are valid from 1,700,000,000 for an hour.
const NOW: u64 = 1_700_000_100;
/// The EdDSA verifier's key: the Ed25519 base point (the public key of scalar 1). Fixed
/// keys keep runs reproducible; tokens under EdDSA and ES256 reach only the checks before
/// the signature.
const ED25519_PUBLIC: [u8; 32] = {
    let mut b = [0x66; 32];
    b[0] = 0x58;
    b
};
/// The private scalar whose public key the ES256 verifier holds.
const P256_SCALAR: [u8; 32] = [0x11; 32];

fn verifiers() -> &'static [Verifier; 3] {
    static V: OnceLock<[Verifier; 3]> = OnceLock::new();
    V.get_or_init(|| {
        [
            Verifier::from_settings("HS256", SECRET, "", "").expect("HS256 verifier"),
            Verifier::from_settings("EdDSA", "", &ed25519_public_pem(), "").expect("EdDSA verifier"),
            Verifier::from_settings("ES256", "", &p256_public_pem(), "").expect("ES256 verifier"),
        ]
    })
}

fn ed25519_public_pem() -> String {
    Ed25519PublicKey::from_bytes(&ED25519_PUBLIC).expect("Ed25519 public key").to_pem()
}

fn p256_public_pem() -> String {
    ES256KeyPair::from_bytes(&P256_SCALAR).expect("P-256 scalar").public_key().to_pem().expect("P-256 PEM")
}

fn verify_all(token: &str) {
    for v in verifiers() {
        if let Ok(t) = v.verify(token, NOW) {
            assert!(!t.sub.is_empty());
            assert!(t.exp.saturating_add(CLOCK_LEEWAY_S) >= NOW, "{t:?}");
            assert!(t.scopes.windows(2).all(|w| w[0] < w[1]), "{t:?}");
            assert_eq!(Scope::parse_list(&t.scope_string()).as_ref(), Ok(&t.scopes));
            let _ = t.authorize(Scope::Ingest, Some("m1"));
            let _ = serde_json::to_string(&t).expect("verified tokens serialize");
        }
    }
}

fn signed(header: &[u8], claims: &[u8]) -> String {
    let signing_input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims));
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("HMAC takes any key");
    mac.update(signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

fn check_carriers(flags: u8, rest: &[u8]) {
    let text = String::from_utf8_lossy(rest);
    let mut parts = text.splitn(3, '\0');
    let mut next = |bit: u8| parts.next().filter(|_| flags & bit != 0);
    let (query, authorization, protocols) = (next(1), next(2), next(4));
    if let Ok(token) = extract_token(query, authorization, protocols) {
        assert!(!token.is_empty() && token.len() <= MAX_TOKEN_BYTES);
        verify_all(&token);
    }
    if let Some(q) = query {
        let redacted = redact_query(q);
        // Only the query part is redacted; a fragment is never sent to a server.
        let redacted_query = redacted.split_once('?').map_or(&*redacted, |(_, q)| q);
        let redacted_query = redacted_query.split_once('#').map_or(redacted_query, |(q, _)| q);
        let redacted_query = redacted_query.strip_prefix('?').unwrap_or(redacted_query);
        for (k, v) in form_urlencoded::parse(redacted_query.as_bytes()) {
            if k == TOKEN_QUERY_PARAM {
                assert_eq!(v, REDACTED, "{q:?} -> {redacted:?}");
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode % 3 {
        0 => verify_all(&String::from_utf8_lossy(rest)),
        1 => {
            let (header, claims) = match rest.iter().position(|&b| b == 0) {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (&br#"{"alg":"HS256","typ":"JWT"}"#[..], rest),
            };
            verify_all(&signed(header, claims));
        }
        _ => {
            let Some((&flags, rest)) = rest.split_first() else { return };
            check_carriers(flags, rest);
        }
    }
});
