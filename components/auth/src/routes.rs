//! The three token routes: issue, introspect, revoke.

use earshot_auth::{
    issued_key, revocation_key, AuthError, IssueError, IssueRequest, IssuedRecord, IssuedToken,
    RevocationRecord, RevocationStatus, VerifiedToken,
};
use earshot_component_common::grip::{http_publish, Delivery};
use earshot_component_common::redis::Redis;
use earshot_component_common::request_log::RequestLog;
use earshot_protocol::grip::Item;
use earshot_protocol::lifetime::{Revocation, REVOCATION_CHANNEL};
use serde::{Deserialize, Serialize};
use spin_sdk::http::Response;
use spin_sdk::key_value::Store;

use crate::admin::require_admin;
use crate::api::{json_response, parse_json, ApiError, RequestParts};
use crate::settings::Settings;

/// Random bytes in a `jti`: 128 bits, so collisions and guessing are out of reach.
const JTI_RANDOM_BYTES: usize = 16;

/// `POST /api/v1/auth/token` (admin): signs a token and remembers its expiry under `issued:{jti}`.
pub(crate) fn issue(
    parts: &RequestParts,
    body: &[u8],
    settings: &Settings,
    now: u64,
    log: &mut RequestLog,
) -> Result<Response, ApiError> {
    require_admin(parts, &settings.admin_key, "token issue disabled")?;
    let issuer = settings.issuer()?;
    let request: IssueRequest = parse_json(body, true)?;
    log.set("sub", request.sub.clone());
    let issued = issuer
        .issue(&request, now, settings.max_token_ttl_s, random_jti()?)
        .map_err(|e| match e {
            IssueError::InvalidField(_) | IssueError::TooLarge => {
                ApiError::BadRequest(e.to_string())
            }
            IssueError::Signing => ApiError::Internal(e.to_string()),
        })?;
    log.set("jti", issued.jti.clone());
    let record = IssuedRecord {
        sub: request.sub,
        exp: issued.exp,
    };
    Store::open_default()?.set(&issued_key(&issued.jti), &record.to_json())?;

    #[derive(Serialize)]
    struct TokenResponse<'a> {
        #[serde(flatten)]
        issued: &'a IssuedToken,
        token_type: &'static str,
    }
    Ok(json_response(
        200,
        &TokenResponse {
            issued: &issued,
            token_type: "Bearer",
        },
    ))
}

/// `POST /api/v1/auth/introspect`: whether a token is currently accepted, and its claims.
pub(crate) fn introspect(
    body: &[u8],
    settings: &Settings,
    now: u64,
    log: &mut RequestLog,
) -> Result<Response, ApiError> {
    #[derive(Deserialize)]
    struct IntrospectRequest {
        token: String,
    }
    #[derive(Serialize)]
    struct Active<'a> {
        active: bool,
        #[serde(flatten)]
        token: &'a VerifiedToken,
    }

    let request: IntrospectRequest = parse_json(body, false)?;
    let verifier = settings.verifier()?;
    let token = match verifier.verify(&request.token, now) {
        Ok(token) => token,
        Err(reason) => return Ok(inactive(reason.to_string(), log)),
    };
    log.set("sub", token.sub.clone());
    if let Some(jti) = &token.jti {
        log.set("jti", jti.clone());
        let store = Store::open_default()?;
        let key = revocation_key(jti);
        match RevocationRecord::status(store.get(&key)?.as_deref(), now) {
            RevocationStatus::Revoked => return Ok(inactive(AuthError::Revoked.to_string(), log)),
            // The record outlived the token; forget it (best effort, it is harmless if it stays).
            RevocationStatus::Lapsed => {
                let _ = store.delete(&key);
            }
            RevocationStatus::NotRevoked => {}
        }
    }
    Ok(json_response(
        200,
        &Active {
            active: true,
            token: &token,
        },
    ))
}

fn inactive(reason: String, log: &mut RequestLog) -> Response {
    let response = json_response(
        200,
        &serde_json::json!({ "active": false, "reason": reason }),
    );
    log.set("reason", reason);
    response
}

/// `POST /api/v1/auth/revoke`: `{"token"}` revokes the presented token (holding it is the
/// authority); `{"jti"}` needs the admin key. The record lives until the token's `exp`; then
/// the `jti` is announced on the revocation channel so every relay closes the sockets that
/// hold it (`broadcast` in the reply says whether that went out; the record alone already
/// refuses new connections and refreshes).
pub(crate) async fn revoke(
    parts: &RequestParts,
    body: &[u8],
    settings: &Settings,
    now: u64,
    log: &mut RequestLog,
) -> Result<Response, ApiError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RevokeRequest {
        #[serde(default)]
        token: Option<String>,
        #[serde(default)]
        jti: Option<String>,
    }

    let request: RevokeRequest = parse_json(body, false)?;
    let store;
    let (jti, exp) = match (request.token, request.jti) {
        (Some(token), None) => {
            let verified = settings.verifier()?.verify(&token, now)?;
            log.set("sub", verified.sub.clone());
            let jti = verified
                .jti
                .ok_or_else(|| ApiError::BadRequest("missing claim: jti".into()))?;
            store = Store::open_default()?;
            (jti, verified.exp)
        }
        (None, Some(jti)) => {
            require_admin(parts, &settings.admin_key, "revoke by jti disabled")?;
            if jti.is_empty() {
                return Err(ApiError::BadRequest("invalid field: jti".into()));
            }
            store = Store::open_default()?;
            // Unknown jti (issued elsewhere, or its record is gone): remember it for the longest
            // lifetime a token may have.
            let exp = match store.get(&issued_key(&jti))? {
                Some(bytes) => IssuedRecord::from_json(&bytes).map(|r| {
                    log.set("sub", r.sub);
                    r.exp
                }),
                None => None,
            }
            .unwrap_or(now.saturating_add(settings.max_token_ttl_s));
            (jti, exp)
        }
        _ => {
            return Err(ApiError::BadRequest(
                "expected exactly one of token, jti".into(),
            ))
        }
    };
    log.set("jti", jti.clone());
    store.set(&revocation_key(&jti), &RevocationRecord { exp }.to_json())?;
    let broadcast = match announce(settings, &jti, exp).await {
        Ok(()) => true,
        Err(detail) => {
            log.set("broadcast_error", detail);
            false
        }
    };
    log.set("broadcast", broadcast.to_string());
    Ok(json_response(
        200,
        &serde_json::json!({ "revoked": true, "jti": jti, "until": exp, "broadcast": broadcast }),
    ))
}

/// Publishes `jti` (revoked until `exp`) on the revocation channel, by the configured GRIP
/// transport.
async fn announce(settings: &Settings, jti: &str, exp: u64) -> Result<(), String> {
    let item = Item::text(
        REVOCATION_CHANNEL,
        Revocation {
            jti: jti.to_owned(),
            exp: Some(exp),
        }
        .to_json(),
    );
    match Delivery::of(
        &settings.grip_publish_url,
        !settings.redis_url.is_empty(),
        &item,
    ) {
        Delivery::Http { url, body } => http_publish(url, body).await.map_err(|e| e.0),
        Delivery::Redis { channel, payload } => Redis::new(&settings.redis_url)
            .publish(&channel, &payload)
            .map_err(|e| e.0),
        Delivery::Nowhere => Err("neither grip_publish_url nor redis_url is set".into()),
    }
}

/// 128 random bits from the host CSPRNG, hex-encoded.
fn random_jti() -> Result<String, ApiError> {
    let mut bytes = [0u8; JTI_RANDOM_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::Internal(format!("random source: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
