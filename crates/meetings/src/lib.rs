//! The native side of meeting end (issue 12). Components have no timers, so the grace
//! period and the webhook's retry schedule run here: a [`Sweeper`] (one in every `earshot
//! up`, any number sharing one Redis) claims meetings whose pending end is due with
//! `earshot_protocol::meeting_end::END_SCRIPT` — a `SET NX` on the end marker, so each end
//! is announced exactly once whichever sweeper gets there first — and delivers the queued
//! `meeting.ended` webhooks: signed (`Earshot-Signature`, [`signature`]), with a stable
//! `Earshot-Delivery-Id`, retried with exponential backoff up to a bound, each attempt
//! claimed by one sweeper at a time ([`delivery`]). Figures for `/metrics` are in
//! [`SweeperStats`].
//!
//! The webhook is sent from native code rather than a component: the retry schedule is a
//! timer, which only native code has; the signing secret then never enters a component;
//! and a component driven per attempt would need either a public route the sweeper calls
//! (a new surface to guard) or a Redis trigger, which fires on every relay and would need
//! a second claim. docs/http-api.md says so too.

mod config;
pub mod delivery;
mod error;
pub mod signature;
mod stats;
mod sweeper;

pub use config::{SweeperConfig, WebhookConfig, MIN_WEBHOOK_SECRET_BYTES, POLL_INTERVAL};
pub use error::MeetingsError;
pub use stats::SweeperStats;
pub use sweeper::Sweeper;
