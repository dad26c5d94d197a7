//! The body of every refused HTTP request, whichever component refused it.

use serde::{Deserialize, Serialize};

/// `{"error": "<reason>"}`: what a 4xx/5xx reply of an Earshot HTTP route carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// Why the request was refused, for the client (never a log-only detail).
    pub error: String,
}
