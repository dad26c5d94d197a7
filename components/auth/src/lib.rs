//! The auth component: issues, introspects and revokes Earshot tokens under `/api/v1/auth/*`.
//! Verification itself lives in `earshot_auth`, shared with every other component.

use std::time::{SystemTime, UNIX_EPOCH};

use spin_sdk::http::{IncomingRequest, Method, Response};

mod admin;
mod api;
mod routes;
mod settings;

use api::{ApiError, RequestParts};
use earshot_component_common::request::read_body;
use earshot_component_common::request_log::{serve_logged, RefusedLevel, RequestLog};
use settings::Settings;

async fn handle(req: IncomingRequest) -> Response {
    serve_logged("auth", RefusedLevel::Info, req, dispatch).await
}

/// The component's export: the macro's wit-bindgen glue is `unsafe` (`export_name`, raw
/// pointers), so `unsafe_code` is allowed in this module alone; everything else in the crate
/// stays under the workspace's `deny`.
#[allow(unsafe_code)]
mod export {
    #[spin_sdk::http_component]
    async fn handle(req: spin_sdk::http::IncomingRequest) -> spin_sdk::http::Response {
        super::handle(req).await
    }
}

async fn dispatch(
    req: IncomingRequest,
    parts: &RequestParts,
    log: &mut RequestLog,
) -> Result<Response, ApiError> {
    let route = Route::of(&parts.path).ok_or(ApiError::NotFound)?;
    log.set("route", route.name());
    if parts.method != Method::Post {
        return Err(ApiError::MethodNotAllowed);
    }
    let body = read_body(req, parts, api::MAX_BODY_BYTES).await?;
    let settings = Settings::load()?;
    let now = now_unix()?;
    match route {
        Route::Token => routes::issue(parts, &body, &settings, now, log),
        Route::Introspect => routes::introspect(&body, &settings, now, log),
        Route::Revoke => routes::revoke(parts, &body, &settings, now, log).await,
    }
}

/// The component's routes (all POST).
#[derive(Debug, Clone, Copy)]
enum Route {
    Token,
    Introspect,
    Revoke,
}

impl Route {
    fn of(path: &str) -> Option<Route> {
        match path.trim_end_matches('/') {
            "/api/v1/auth/token" => Some(Route::Token),
            "/api/v1/auth/introspect" => Some(Route::Introspect),
            "/api/v1/auth/revoke" => Some(Route::Revoke),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Route::Token => "token",
            Route::Introspect => "introspect",
            Route::Revoke => "revoke",
        }
    }
}

/// Wall-clock unix seconds (WASI `wall-clock` on wasm32-wasip2).
fn now_unix() -> Result<u64, ApiError> {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .map_err(|_| ApiError::Internal("system clock before 1970".into()))
}
