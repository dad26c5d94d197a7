//! Small responses both listeners answer with, in the host's body type.

use bytes::Bytes;
use earshot_host::HyperOutgoingBody;
use http_body_util::{BodyExt, Full};

/// A complete body as the host's response body type.
pub(crate) fn boxed(resp: http::Response<Full<Bytes>>) -> http::Response<HyperOutgoingBody> {
    resp.map(|b| b.map_err(|never| -> wasmtime_wasi_http::Error { match never {} }).boxed_unsync())
}

/// A plain-text answer with `code`.
pub(crate) fn status(code: http::StatusCode, text: &'static str) -> http::Response<HyperOutgoingBody> {
    boxed(
        http::Response::builder()
            .status(code)
            .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(Full::new(Bytes::from_static(text.as_bytes())))
            .expect("static response"),
    )
}

/// 404 with the same body wherever a path is not served.
pub(crate) fn not_found() -> http::Response<HyperOutgoingBody> {
    status(http::StatusCode::NOT_FOUND, "not found\n")
}

/// Compares secrets in time independent of where they differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
