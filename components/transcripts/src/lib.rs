//! The transcripts component: a Spin Redis trigger on `earshot:transcripts`
//! (`earshot_protocol::transcript::INTAKE_CHANNEL`). Each message is one segment from a
//! speech-to-text worker; `transcript_intake` validates, stores and publishes it, and logs
//! the outcome.
//!
//! A refused segment (bad JSON, unknown meeting, oversized text…) is the sender's problem and
//! answers `Ok`: pub/sub has no redelivery, and an error would only add a second log line.
//! A backend failure (Redis, key-value store) answers `Err`, so the host records that a
//! message was lost.

use transcript_intake::spin::intake;
use transcript_intake::{Intake, IntakeError, Via};

async fn on_message(payload: Vec<u8>) -> Result<(), IntakeError> {
    let input = Intake {
        payload: &payload,
        via: Via::Redis,
        path_meeting: None,
        sub: None,
    };
    match intake(input).await {
        Ok(_) | Err(IntakeError::Rejected(_)) => Ok(()),
        Err(e @ IntakeError::Unavailable(_)) => Err(e),
    }
}

/// The component's export: the macro's wit-bindgen glue is `unsafe` (`export_name`, raw
/// pointers), so `unsafe_code` is allowed in this module alone; everything else in the crate
/// stays under the workspace's `deny`.
#[allow(unsafe_code)]
mod export {
    #[spin_sdk::redis_component]
    async fn on_message(payload: Vec<u8>) -> Result<(), transcript_intake::IntakeError> {
        super::on_message(payload).await
    }
}
