//! `POST /api/v1/meetings/{id}/end` (scope `ingest` for the meeting): ends the meeting now.
//! The end runs `earshot_protocol::meeting_end::END_SCRIPT`, the same atomic step the
//! native sweepers run at a grace period's end, so a meeting ends exactly once whichever
//! comes first; the winner's `meeting_ended` event and `meeting.ended` webhook delivery go
//! out in that step. The route lives in the `transcripts-http` component (the
//! `/api/v1/meetings/...` prefix is its), which calls [`serve`] for the end path.
//!
//! Replies: 200 `{"ended":true,"totals":{…}}`, or `{"ended":false}` when the meeting had
//! already ended (a retried request is harmless); errors `{"error":…}` with
//! 400/401/403/404/405/503 ([`EndError`]).

mod error;

pub use error::EndError;

#[cfg(target_arch = "wasm32")]
mod route;

#[cfg(target_arch = "wasm32")]
pub use route::serve;

pub use earshot_protocol::meeting_end::parse_end_path;
