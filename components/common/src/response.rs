//! JSON replies, and the trait through which each HTTP surface's one error type says how it
//! is answered and logged (the status mapping itself stays with that type).

use earshot_protocol::http::ErrorReply;
use serde::Serialize;
use spin_sdk::http::Response;

/// A JSON response, never cached: some carry token material, which intermediaries must not
/// keep (RFC 6749 §5.1), and none is worth caching.
pub fn json_response(status: u16, body: &impl Serialize) -> Response {
    let bytes = serde_json::to_vec(body).expect("response shapes always serialize");
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("cache-control", "no-store")
        .body(bytes)
        .build()
}

/// An HTTP surface's error type: the one place its failures map to statuses and reasons.
pub trait HttpFailure {
    /// The HTTP status.
    fn status(&self) -> u16;

    /// The `error` string of the response body.
    fn reason(&self) -> String;

    /// What the log gets beyond the reason.
    fn detail(&self) -> Option<&str>;

    /// The header this failure adds to the reply (`allow`, `www-authenticate`, …), if any.
    fn header(&self) -> Option<(&'static str, &'static str)>;

    /// `{"error": "<reason>"}` ([`ErrorReply`]) with the status and [`HttpFailure::header`].
    fn response(&self) -> Response {
        let mut response = json_response(
            self.status(),
            &ErrorReply {
                error: self.reason(),
            },
        );
        if let Some((name, value)) = self.header() {
            response.set_header(name, value);
        }
        response
    }
}
