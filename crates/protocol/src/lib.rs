//! Every wire shape of Earshot, in one crate that compiles for the wasm components and
//! the native relay alike, so no JSON shape or code is written twice.

pub mod asr;
pub mod close;
pub mod events;
pub mod grip;
pub mod http;
pub mod ids;
pub mod ingest;
pub mod lifetime;
pub mod limits;
pub mod meeting;
pub mod meeting_end;
pub mod transcript;

pub use close::CloseCode;
pub use events::{decode_events, encode_events, Event, EventError};
pub use ids::{MeetingId, Source, WsRoute};
