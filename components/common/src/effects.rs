//! What the pure side of a component and its Spin shell exchange, whatever capabilities its
//! own `Effects` trait names: why a host capability failed, and a compare-and-swap update.

/// Why a host capability failed. The text is for the log only, never for a client (it can
/// name hosts and keys).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EffectError(pub String);

/// A compare-and-swap update of one key-value entry: given the current value, the value to
/// store, or `None` to leave the entry as it is.
pub type Update<'a> = dyn FnMut(Option<&[u8]>) -> Option<Vec<u8>> + 'a;
