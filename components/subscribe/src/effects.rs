//! The capabilities the subscriber routes need from their host beyond the shared ones
//! (`earshot_ws_session::effects::Effects`: the key-value store, the log): the transcript
//! history in Redis. The Spin shell implements them (`spin::backend`), the unit tests over
//! memory. Subscribers publish nothing and write nothing.

use earshot_ws_session::effects::{EffectError, Effects};

use crate::history::History;

/// What the subscriber routes ask of their host.
pub(crate) trait SubscribeEffects: Effects {
    /// Runs the history script (`history::SCRIPT`) on transcript stream `key`: at most
    /// `count` entries after offset `after` (exclusive), newest first, with what the stream
    /// knows about removed entries. A stream that does not exist has no history.
    fn redis_history(
        &mut self,
        key: &str,
        after: &str,
        count: usize,
    ) -> Result<History, EffectError>;
}
