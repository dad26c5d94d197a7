//! The `default` key-value store every Earshot component shares, through `wasi:keyvalue`
//! (store and atomics: real compare-and-swap), opened on first use.

use spin_sdk::wit::wasi::keyvalue::{atomics, store};

use crate::effects::{EffectError, Update};

/// The key-value store every Earshot component shares.
pub const KV_STORE: &str = "default";

/// Compare-and-swap attempts before giving up, per update. A key is contended by a handful of
/// writers at once (the connections of one meeting for presence, of one (meeting, source) for
/// the rate limit, the segments of one meeting on both transcript surfaces for its state);
/// sixteen straight losses means the store is misbehaving, not busy.
pub const MAX_CAS_ATTEMPTS: usize = 16;

/// The store of one request, opened on first use.
#[derive(Default)]
pub struct Kv {
    bucket: Option<store::Bucket>,
}

impl Kv {
    /// A store not opened yet.
    pub fn new() -> Kv {
        Kv::default()
    }

    fn bucket(&mut self) -> Result<&store::Bucket, EffectError> {
        if self.bucket.is_none() {
            self.bucket = Some(store::open(KV_STORE).map_err(|e| kv_error("open", &e))?);
        }
        Ok(self.bucket.as_ref().expect("just opened"))
    }

    /// Reads an entry.
    pub fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, EffectError> {
        self.bucket()?.get(key).map_err(|e| kv_error("get", &e))
    }

    /// Replaces an entry with `update(current)` by compare-and-swap (`None`: leave it as it
    /// is); when another writer got in between, `update` runs again on the newer value.
    pub fn update(&mut self, key: &str, update: &mut Update<'_>) -> Result<(), EffectError> {
        let bucket = self.bucket()?;
        let mut cas = atomics::Cas::new(bucket, key).map_err(|e| kv_error("cas", &e))?;
        for _ in 0..MAX_CAS_ATTEMPTS {
            let current = cas.current().map_err(|e| kv_error("cas current", &e))?;
            let Some(next) = update(current.as_deref()) else {
                return Ok(());
            };
            match atomics::swap(cas, &next) {
                Ok(()) => return Ok(()),
                // Someone else wrote first: the fresh handle holds their value; decide again.
                Err(atomics::CasError::CasFailed(fresh)) => cas = fresh,
                Err(atomics::CasError::StoreError(e)) => return Err(kv_error("swap", &e)),
            }
        }
        Err(EffectError(format!(
            "key-value swap of {key}: lost {MAX_CAS_ATTEMPTS} races in a row"
        )))
    }
}

fn kv_error(op: &str, e: &store::Error) -> EffectError {
    EffectError(format!("key-value {op}: {e:?}"))
}
