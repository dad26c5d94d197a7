//! Key-value for guests: `fermyon:spin/key-value` and `wasi:keyvalue` (store, atomics,
//! batch), one implementation over the shared [`KeyValueBackend`].
//!
//! The backend is synchronous (SQLite behind a mutex) while these host functions are
//! async and run on the tokio workers that also carry every socket. Each backend call
//! therefore runs on tokio's blocking pool (`spawn_blocking`), so a slow disk or a
//! contended lock parks a blocking-pool thread, never a worker. `block_in_place` is
//! not used: every caller here is async (no sync context forces it), and it would
//! panic on a current-thread runtime and still stall that worker's other tasks.

use std::sync::Arc;

use wasmtime::component::Resource;
use wasmtime::error::Context as _;

use super::Wt;
use crate::bindings::fermyon::spin2_0_0::key_value;
use crate::bindings::wasi::keyvalue::{atomics, batch, store};
use crate::kv::{KeyValueBackend, KvError};
use crate::state::HostState;

/// An open key-value store (Spin's `store` and wasi:keyvalue's `bucket`).
#[derive(Debug, Clone)]
#[allow(unreachable_pub)]
pub struct KvStoreHandle {
    label: String,
}

/// A compare-and-swap handle: the value seen when it was created.
#[derive(Debug, Clone)]
#[allow(unreachable_pub)]
pub struct CasHandle {
    label: String,
    key: String,
    current: Option<Vec<u8>>,
}

impl From<KvError> for key_value::Error {
    fn from(e: KvError) -> Self {
        match e {
            KvError::AccessDenied => key_value::Error::AccessDenied,
            KvError::NoSuchStore => key_value::Error::NoSuchStore,
            KvError::Other(m) => key_value::Error::Other(m),
        }
    }
}

impl From<KvError> for store::Error {
    fn from(e: KvError) -> Self {
        match e {
            KvError::AccessDenied => store::Error::AccessDenied,
            KvError::NoSuchStore => store::Error::NoSuchStore,
            KvError::Other(m) => store::Error::Other(m),
        }
    }
}

/// Runs `op` on the blocking pool. A panic inside the backend traps the guest (a host
/// bug is not the guest's store error), with the join error as its cause.
async fn off_worker<T, F>(kv: Arc<dyn KeyValueBackend>, op: F) -> Wt<Result<T, KvError>>
where
    T: Send + 'static,
    F: FnOnce(&dyn KeyValueBackend) -> Result<T, KvError> + Send + 'static,
{
    tokio::task::spawn_blocking(move || op(kv.as_ref()))
        .await
        .context("key-value backend call did not complete")
}

/// An open store resolved out of the guest's handle: owned, so the future that runs
/// it does not borrow the (non-`Sync`) per-call state across the await.
struct OnStore {
    kv: Arc<dyn KeyValueBackend>,
    label: String,
}

impl OnStore {
    /// Runs `op` on this store, off the async workers.
    async fn run<T, F>(self, op: F) -> Wt<Result<T, KvError>>
    where
        T: Send + 'static,
        F: FnOnce(&dyn KeyValueBackend, &str) -> Result<T, KvError> + Send + 'static,
    {
        let OnStore { kv, label } = self;
        off_worker(kv, move |kv| op(kv, &label)).await
    }
}

impl HostState {
    fn open_store(&mut self, label: String) -> Result<KvStoreHandle, KvError> {
        self.component.kv_grants.check(&label, &self.shared.kv_labels)?;
        Ok(KvStoreHandle { label })
    }

    fn store_label(&self, r: &Resource<KvStoreHandle>) -> Wt<String> {
        Ok(self.table.get(r)?.label.clone())
    }

    /// The store `r` names, ready to run an operation on.
    fn on_store(&self, r: &Resource<KvStoreHandle>) -> Wt<OnStore> {
        Ok(OnStore { kv: self.shared.kv.clone(), label: self.store_label(r)? })
    }
}

impl key_value::Host for HostState {}

impl key_value::HostStore for HostState {
    async fn open(&mut self, label: String) -> Wt<Result<Resource<KvStoreHandle>, key_value::Error>> {
        match self.open_store(label) {
            Ok(h) => Ok(Ok(self.table.push(h)?)),
            Err(e) => Ok(Err(e.into())),
        }
    }

    async fn get(&mut self, s: Resource<KvStoreHandle>, key: String) -> Wt<Result<Option<Vec<u8>>, key_value::Error>> {
        Ok(self.on_store(&s)?.run(move |kv, store| kv.get(store, &key)).await?.map_err(Into::into))
    }

    async fn set(&mut self, s: Resource<KvStoreHandle>, key: String, value: Vec<u8>) -> Wt<Result<(), key_value::Error>> {
        Ok(self.on_store(&s)?.run(move |kv, store| kv.set(store, &key, &value)).await?.map_err(Into::into))
    }

    async fn delete(&mut self, s: Resource<KvStoreHandle>, key: String) -> Wt<Result<(), key_value::Error>> {
        Ok(self.on_store(&s)?.run(move |kv, store| kv.delete(store, &key)).await?.map_err(Into::into))
    }

    async fn exists(&mut self, s: Resource<KvStoreHandle>, key: String) -> Wt<Result<bool, key_value::Error>> {
        Ok(self.on_store(&s)?.run(move |kv, store| kv.exists(store, &key)).await?.map_err(Into::into))
    }

    async fn get_keys(&mut self, s: Resource<KvStoreHandle>) -> Wt<Result<Vec<String>, key_value::Error>> {
        Ok(self.on_store(&s)?.run(|kv, store| kv.keys(store)).await?.map_err(Into::into))
    }

    async fn drop(&mut self, s: Resource<KvStoreHandle>) -> Wt<()> {
        self.table.delete(s)?;
        Ok(())
    }
}

impl store::Host for HostState {
    async fn open(&mut self, identifier: String) -> Wt<Result<Resource<KvStoreHandle>, store::Error>> {
        match self.open_store(identifier) {
            Ok(h) => Ok(Ok(self.table.push(h)?)),
            Err(e) => Ok(Err(e.into())),
        }
    }
}

impl store::HostBucket for HostState {
    async fn get(&mut self, b: Resource<KvStoreHandle>, key: String) -> Wt<Result<Option<Vec<u8>>, store::Error>> {
        Ok(self.on_store(&b)?.run(move |kv, store| kv.get(store, &key)).await?.map_err(Into::into))
    }

    async fn set(&mut self, b: Resource<KvStoreHandle>, key: String, value: Vec<u8>) -> Wt<Result<(), store::Error>> {
        Ok(self.on_store(&b)?.run(move |kv, store| kv.set(store, &key, &value)).await?.map_err(Into::into))
    }

    async fn delete(&mut self, b: Resource<KvStoreHandle>, key: String) -> Wt<Result<(), store::Error>> {
        Ok(self.on_store(&b)?.run(move |kv, store| kv.delete(store, &key)).await?.map_err(Into::into))
    }

    async fn exists(&mut self, b: Resource<KvStoreHandle>, key: String) -> Wt<Result<bool, store::Error>> {
        Ok(self.on_store(&b)?.run(move |kv, store| kv.exists(store, &key)).await?.map_err(Into::into))
    }

    async fn list_keys(
        &mut self,
        b: Resource<KvStoreHandle>,
        _cursor: Option<String>,
    ) -> Wt<Result<store::KeyResponse, store::Error>> {
        // One page holds every key (as Spin's SQLite store does), so no cursor is
        // ever returned.
        Ok(self.on_store(&b)?.run(|kv, store| kv.keys(store))
            .await?
            .map(|keys| store::KeyResponse { keys, cursor: None })
            .map_err(Into::into))
    }

    async fn drop(&mut self, b: Resource<KvStoreHandle>) -> Wt<()> {
        self.table.delete(b)?;
        Ok(())
    }
}

impl atomics::Host for HostState {
    async fn increment(&mut self, b: Resource<KvStoreHandle>, key: String, delta: i64) -> Wt<Result<i64, store::Error>> {
        Ok(self.on_store(&b)?.run(move |kv, store| kv.increment(store, &key, delta)).await?.map_err(Into::into))
    }

    async fn swap(&mut self, cas: Resource<CasHandle>, value: Vec<u8>) -> Wt<Result<(), atomics::CasError>> {
        let handle = self.table.delete(cas)?;
        let (label, key, expected) = (handle.label.clone(), handle.key.clone(), handle.current.clone());
        // Swap and, when it loses, read the value that beat it in the same blocking
        // call: one hop to the pool, not two.
        let outcome = off_worker(self.shared.kv.clone(), move |kv| {
            if kv.compare_and_swap(&label, &key, expected.as_deref(), &value)? {
                Ok(None)
            } else {
                Ok(Some(kv.get(&label, &key)?))
            }
        })
        .await?;
        Ok(match outcome {
            Ok(None) => Ok(()),
            // The guest may retry with the handle it gets back, primed with the value
            // that beat it.
            Ok(Some(current)) => Err(atomics::CasError::CasFailed(self.table.push(CasHandle { current, ..handle })?)),
            Err(e) => Err(atomics::CasError::StoreError(e.into())),
        })
    }
}

impl atomics::HostCas for HostState {
    async fn new(&mut self, b: Resource<KvStoreHandle>, key: String) -> Wt<Result<Resource<CasHandle>, store::Error>> {
        let label = self.store_label(&b)?;
        let (store, k) = (label.clone(), key.clone());
        match off_worker(self.shared.kv.clone(), move |kv| kv.get(&store, &k)).await? {
            Ok(current) => Ok(Ok(self.table.push(CasHandle { label, key, current })?)),
            Err(e) => Ok(Err(e.into())),
        }
    }

    async fn current(&mut self, cas: Resource<CasHandle>) -> Wt<Result<Option<Vec<u8>>, store::Error>> {
        Ok(Ok(self.table.get(&cas)?.current.clone()))
    }

    async fn drop(&mut self, cas: Resource<CasHandle>) -> Wt<()> {
        self.table.delete(cas)?;
        Ok(())
    }
}

impl batch::Host for HostState {
    async fn get_many(
        &mut self,
        b: Resource<KvStoreHandle>,
        keys: Vec<String>,
    ) -> Wt<Result<Vec<(String, Option<Vec<u8>>)>, store::Error>> {
        let got = self.on_store(&b)?.run(move |kv, store| {
                keys.into_iter()
                    .map(|key| kv.get(store, &key).map(|v| (key, v)))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await?;
        Ok(got.map_err(Into::into))
    }

    async fn set_many(
        &mut self,
        b: Resource<KvStoreHandle>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> Wt<Result<(), store::Error>> {
        let set = self.on_store(&b)?.run(move |kv, store| key_values.iter().try_for_each(|(k, v)| kv.set(store, k, v)))
            .await?;
        Ok(set.map_err(Into::into))
    }

    async fn delete_many(&mut self, b: Resource<KvStoreHandle>, keys: Vec<String>) -> Wt<Result<(), store::Error>> {
        let deleted = self.on_store(&b)?.run(move |kv, store| keys.iter().try_for_each(|k| kv.delete(store, k)))
            .await?;
        Ok(deleted.map_err(Into::into))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use crate::host::testing::{borrow, state, state_with, Grants};
    use key_value::HostStore as _;

    fn granted() -> HostState {
        state(Grants { kv: &["default"], ..Grants::default() })
    }

    #[tokio::test]
    async fn spin_key_value_get_set_delete_exists_get_keys() {
        let mut s = granted();
        let st = s.open("default".into()).await.unwrap().unwrap();
        assert_eq!(s.get(borrow(&st), "a".into()).await.unwrap().unwrap(), None);
        s.set(borrow(&st), "b".into(), b"2".to_vec()).await.unwrap().unwrap();
        s.set(borrow(&st), "a".into(), b"1".to_vec()).await.unwrap().unwrap();
        assert_eq!(s.get(borrow(&st), "a".into()).await.unwrap().unwrap().as_deref(), Some(&b"1"[..]));
        assert!(s.exists(borrow(&st), "a".into()).await.unwrap().unwrap());
        assert_eq!(s.get_keys(borrow(&st)).await.unwrap().unwrap(), ["a", "b"]);
        s.delete(borrow(&st), "a".into()).await.unwrap().unwrap();
        assert!(!s.exists(borrow(&st), "a".into()).await.unwrap().unwrap());
        s.delete(borrow(&st), "never-there".into()).await.unwrap().expect("deleting an absent key is not an error");
        key_value::HostStore::drop(&mut s, st).await.unwrap();
        assert!(s.table.is_empty(), "drop removed the handle");
    }

    #[tokio::test]
    async fn an_ungranted_label_is_access_denied_and_a_granted_missing_one_no_such_store() {
        let mut s = state(Grants { kv: &["default", "cache"], ..Grants::default() });
        assert!(matches!(s.open("secret".into()).await.unwrap(), Err(key_value::Error::AccessDenied)));
        assert!(matches!(s.open("cache".into()).await.unwrap(), Err(key_value::Error::NoSuchStore)));
        assert!(matches!(store::Host::open(&mut s, "secret".into()).await.unwrap(), Err(store::Error::AccessDenied)));
        let mut none = state(Grants::default());
        assert!(matches!(none.open("default".into()).await.unwrap(), Err(key_value::Error::AccessDenied)));
    }

    #[tokio::test]
    async fn both_interfaces_see_one_store() {
        let mut s = granted();
        let spin = s.open("default".into()).await.unwrap().unwrap();
        let bucket = store::Host::open(&mut s, "default".into()).await.unwrap().unwrap();
        s.set(borrow(&spin), "k".into(), b"v".to_vec()).await.unwrap().unwrap();
        let got = store::HostBucket::get(&mut s, borrow(&bucket), "k".into()).await.unwrap().unwrap();
        assert_eq!(got.as_deref(), Some(&b"v"[..]));
        let listed = store::HostBucket::list_keys(&mut s, borrow(&bucket), None).await.unwrap().unwrap();
        assert_eq!((listed.keys, listed.cursor), (vec!["k".to_owned()], None));
    }

    #[tokio::test]
    async fn increment_counts_and_refuses_a_non_integer() {
        let mut s = granted();
        let b = store::Host::open(&mut s, "default".into()).await.unwrap().unwrap();
        assert_eq!(atomics::Host::increment(&mut s, borrow(&b), "n".into(), 5).await.unwrap().unwrap(), 5);
        assert_eq!(atomics::Host::increment(&mut s, borrow(&b), "n".into(), -7).await.unwrap().unwrap(), -2);
        store::HostBucket::set(&mut s, borrow(&b), "t".into(), b"text".to_vec()).await.unwrap().unwrap();
        let err = atomics::Host::increment(&mut s, borrow(&b), "t".into(), 1).await.unwrap().unwrap_err();
        assert!(matches!(err, store::Error::Other(ref m) if m.contains("not an integer")), "{err:?}");
    }

    #[tokio::test]
    async fn compare_and_swap_wins_once_and_a_loser_gets_the_winning_value() {
        let mut s = granted();
        let b = store::Host::open(&mut s, "default".into()).await.unwrap().unwrap();
        // Two guests read the absent key; the first swap wins, the second loses.
        let first = atomics::HostCas::new(&mut s, borrow(&b), "c".into()).await.unwrap().unwrap();
        let second = atomics::HostCas::new(&mut s, borrow(&b), "c".into()).await.unwrap().unwrap();
        assert_eq!(atomics::HostCas::current(&mut s, borrow(&second)).await.unwrap().unwrap(), None);
        atomics::Host::swap(&mut s, first, b"one".to_vec()).await.unwrap().expect("first swap wins");
        let lost = atomics::Host::swap(&mut s, second, b"two".to_vec()).await.unwrap();
        let Err(atomics::CasError::CasFailed(retry)) = lost else { panic!("second swap must lose, got {lost:?}") };
        let seen = atomics::HostCas::current(&mut s, borrow(&retry)).await.unwrap().unwrap();
        assert_eq!(seen.as_deref(), Some(&b"one"[..]), "the retry handle holds the winner's value");
        atomics::Host::swap(&mut s, retry, b"two".to_vec()).await.unwrap().expect("the retry wins");
        let now = store::HostBucket::get(&mut s, borrow(&b), "c".into()).await.unwrap().unwrap();
        assert_eq!(now.as_deref(), Some(&b"two"[..]));
    }

    #[tokio::test]
    async fn batch_sets_gets_and_deletes_many() {
        let mut s = granted();
        let b = store::Host::open(&mut s, "default".into()).await.unwrap().unwrap();
        let pairs = vec![("x".to_owned(), b"1".to_vec()), ("y".to_owned(), b"2".to_vec())];
        batch::Host::set_many(&mut s, borrow(&b), pairs).await.unwrap().unwrap();
        let got = batch::Host::get_many(&mut s, borrow(&b), vec!["x".into(), "z".into()]).await.unwrap().unwrap();
        assert_eq!(got, vec![("x".to_owned(), Some(b"1".to_vec())), ("z".to_owned(), None)]);
        batch::Host::delete_many(&mut s, borrow(&b), vec!["x".into(), "y".into()]).await.unwrap().unwrap();
        let keys = store::HostBucket::list_keys(&mut s, borrow(&b), None).await.unwrap().unwrap().keys;
        assert!(keys.is_empty(), "{keys:?}");
    }

    /// A backend whose `get` blocks its thread until released: if the host ran it on
    /// the calling worker, a current-thread runtime could never run the releaser.
    struct Gate(Mutex<mpsc::Receiver<()>>);

    impl KeyValueBackend for Gate {
        fn get(&self, _: &str, _: &str) -> Result<Option<Vec<u8>>, KvError> {
            let released = self.0.lock().unwrap().recv_timeout(Duration::from_secs(5));
            released.map(|()| Some(b"released".to_vec())).map_err(|_| KvError::Other("the worker was blocked".into()))
        }
        fn set(&self, _: &str, _: &str, _: &[u8]) -> Result<(), KvError> {
            unreachable!()
        }
        fn delete(&self, _: &str, _: &str) -> Result<(), KvError> {
            unreachable!()
        }
        fn exists(&self, _: &str, _: &str) -> Result<bool, KvError> {
            unreachable!()
        }
        fn keys(&self, _: &str) -> Result<Vec<String>, KvError> {
            unreachable!()
        }
        fn increment(&self, _: &str, _: &str, _: i64) -> Result<i64, KvError> {
            unreachable!()
        }
        fn compare_and_swap(&self, _: &str, _: &str, _: Option<&[u8]>, _: &[u8]) -> Result<bool, KvError> {
            unreachable!()
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_blocking_backend_call_leaves_the_async_worker_free() {
        let (release, gate) = mpsc::channel();
        let mut s = state_with(Arc::new(Gate(Mutex::new(gate))), Grants { kv: &["default"], ..Grants::default() });
        let st = s.open("default".into()).await.unwrap().unwrap();
        let releaser = async {
            // Runs only if the worker thread is free while `get` waits.
            tokio::task::yield_now().await;
            release.send(()).unwrap();
        };
        let (got, ()) = tokio::join!(s.get(borrow(&st), "k".into()), releaser);
        assert_eq!(got.unwrap().unwrap().as_deref(), Some(&b"released"[..]));
    }
}
