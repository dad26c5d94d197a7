//! The Spin host interfaces (key-value, Redis, variables, wasi:keyvalue), implemented
//! once over the shared backends with Spin's error semantics.

use wasmtime::component::Resource;

use crate::bindings::fermyon::spin2_0_0::{key_value, redis, variables};
use crate::bindings::wasi::keyvalue::{atomics, batch, store};
use crate::kv::KvError;
use crate::redis_out::{flatten, Flat, RedisConnection, RedisOpError};
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

type Wt<T> = wasmtime::Result<T>;

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

impl HostState {
    fn open_store(&mut self, label: String) -> Result<KvStoreHandle, KvError> {
        self.component.kv_grants.check(&label, &self.shared.kv_labels)?;
        Ok(KvStoreHandle { label })
    }

    fn store_label(&self, r: &Resource<KvStoreHandle>) -> Wt<String> {
        Ok(self.table.get(r)?.label.clone())
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
        let label = self.store_label(&s)?;
        Ok(self.shared.kv.get(&label, &key).map_err(Into::into))
    }

    async fn set(&mut self, s: Resource<KvStoreHandle>, key: String, value: Vec<u8>) -> Wt<Result<(), key_value::Error>> {
        let label = self.store_label(&s)?;
        Ok(self.shared.kv.set(&label, &key, &value).map_err(Into::into))
    }

    async fn delete(&mut self, s: Resource<KvStoreHandle>, key: String) -> Wt<Result<(), key_value::Error>> {
        let label = self.store_label(&s)?;
        Ok(self.shared.kv.delete(&label, &key).map_err(Into::into))
    }

    async fn exists(&mut self, s: Resource<KvStoreHandle>, key: String) -> Wt<Result<bool, key_value::Error>> {
        let label = self.store_label(&s)?;
        Ok(self.shared.kv.exists(&label, &key).map_err(Into::into))
    }

    async fn get_keys(&mut self, s: Resource<KvStoreHandle>) -> Wt<Result<Vec<String>, key_value::Error>> {
        let label = self.store_label(&s)?;
        Ok(self.shared.kv.keys(&label).map_err(Into::into))
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
        let label = self.store_label(&b)?;
        Ok(self.shared.kv.get(&label, &key).map_err(Into::into))
    }

    async fn set(&mut self, b: Resource<KvStoreHandle>, key: String, value: Vec<u8>) -> Wt<Result<(), store::Error>> {
        let label = self.store_label(&b)?;
        Ok(self.shared.kv.set(&label, &key, &value).map_err(Into::into))
    }

    async fn delete(&mut self, b: Resource<KvStoreHandle>, key: String) -> Wt<Result<(), store::Error>> {
        let label = self.store_label(&b)?;
        Ok(self.shared.kv.delete(&label, &key).map_err(Into::into))
    }

    async fn exists(&mut self, b: Resource<KvStoreHandle>, key: String) -> Wt<Result<bool, store::Error>> {
        let label = self.store_label(&b)?;
        Ok(self.shared.kv.exists(&label, &key).map_err(Into::into))
    }

    async fn list_keys(
        &mut self,
        b: Resource<KvStoreHandle>,
        _cursor: Option<String>,
    ) -> Wt<Result<store::KeyResponse, store::Error>> {
        // One page holds every key (as Spin's SQLite store does), so no cursor is
        // ever returned.
        let label = self.store_label(&b)?;
        Ok(self
            .shared
            .kv
            .keys(&label)
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
        let label = self.store_label(&b)?;
        Ok(self.shared.kv.increment(&label, &key, delta).map_err(Into::into))
    }

    async fn swap(&mut self, cas: Resource<CasHandle>, value: Vec<u8>) -> Wt<Result<(), atomics::CasError>> {
        let handle = self.table.delete(cas)?;
        let swapped = self
            .shared
            .kv
            .compare_and_swap(&handle.label, &handle.key, handle.current.as_deref(), &value);
        Ok(match swapped {
            Ok(true) => Ok(()),
            Ok(false) => {
                // The guest may retry with the handle it gets back, primed with the
                // value that beat it.
                let current = self.shared.kv.get(&handle.label, &handle.key).ok().flatten();
                let fresh = self.table.push(CasHandle { current, ..handle })?;
                Err(atomics::CasError::CasFailed(fresh))
            }
            Err(e) => Err(atomics::CasError::StoreError(e.into())),
        })
    }
}

impl atomics::HostCas for HostState {
    async fn new(&mut self, b: Resource<KvStoreHandle>, key: String) -> Wt<Result<Resource<CasHandle>, store::Error>> {
        let label = self.store_label(&b)?;
        match self.shared.kv.get(&label, &key) {
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
        let label = self.store_label(&b)?;
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            match self.shared.kv.get(&label, &key) {
                Ok(v) => out.push((key, v)),
                Err(e) => return Ok(Err(e.into())),
            }
        }
        Ok(Ok(out))
    }

    async fn set_many(
        &mut self,
        b: Resource<KvStoreHandle>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> Wt<Result<(), store::Error>> {
        let label = self.store_label(&b)?;
        for (k, v) in key_values {
            if let Err(e) = self.shared.kv.set(&label, &k, &v) {
                return Ok(Err(e.into()));
            }
        }
        Ok(Ok(()))
    }

    async fn delete_many(&mut self, b: Resource<KvStoreHandle>, keys: Vec<String>) -> Wt<Result<(), store::Error>> {
        let label = self.store_label(&b)?;
        for k in keys {
            if let Err(e) = self.shared.kv.delete(&label, &k) {
                return Ok(Err(e.into()));
            }
        }
        Ok(Ok(()))
    }
}

impl variables::Host for HostState {
    async fn get(&mut self, name: String) -> Wt<Result<String, variables::Error>> {
        if crate::manifest::check_variable_name(&name).is_err() {
            return Ok(Err(variables::Error::InvalidName(name)));
        }
        Ok(match self.component.variables.get(&name) {
            Some(v) => Ok(v.clone()),
            None => Err(variables::Error::Undefined(format!("no variable for {name:?}"))),
        })
    }
}

impl From<RedisOpError> for redis::Error {
    fn from(e: RedisOpError) -> Self {
        match e {
            RedisOpError::InvalidAddress => redis::Error::InvalidAddress,
            RedisOpError::TypeError => redis::Error::TypeError,
            RedisOpError::Other(m) => redis::Error::Other(m),
        }
    }
}

impl HostState {
    fn redis_address(&self, c: &Resource<RedisConnection>) -> Wt<String> {
        Ok(self.table.get(c)?.address.clone())
    }

    async fn redis_query(&mut self, c: &Resource<RedisConnection>, cmd: ::redis::Cmd) -> Wt<Result<::redis::Value, redis::Error>> {
        let address = self.redis_address(c)?;
        let shared = self.shared.clone();
        Ok(shared.redis.query(&address, &cmd).await.map_err(Into::into))
    }
}

fn as_int(v: ::redis::Value) -> Result<i64, redis::Error> {
    match v {
        ::redis::Value::Int(i) => Ok(i),
        _ => Err(redis::Error::TypeError),
    }
}

fn as_payload(v: ::redis::Value) -> Result<Option<Vec<u8>>, redis::Error> {
    match v {
        ::redis::Value::Nil => Ok(None),
        ::redis::Value::BulkString(b) => Ok(Some(b)),
        ::redis::Value::SimpleString(s) => Ok(Some(s.into_bytes())),
        _ => Err(redis::Error::TypeError),
    }
}

impl redis::Host for HostState {}

impl redis::HostConnection for HostState {
    async fn open(&mut self, address: String) -> Wt<Result<Resource<RedisConnection>, redis::Error>> {
        if !self.component.allowed_hosts.allows_url(&address) {
            tracing::warn!(
                component = %self.component.id,
                destination = %crate::redis_out::redact_url(&address),
                "outbound redis denied by allowed_outbound_hosts"
            );
            return Ok(Err(redis::Error::InvalidAddress));
        }
        if let Err(e) = self.shared.redis.connection(&address).await {
            return Ok(Err(e.into()));
        }
        Ok(Ok(self.table.push(RedisConnection { address })?))
    }

    async fn publish(&mut self, c: Resource<RedisConnection>, channel: String, payload: Vec<u8>) -> Wt<Result<(), redis::Error>> {
        let mut cmd = ::redis::cmd("PUBLISH");
        cmd.arg(channel).arg(payload);
        Ok(self.redis_query(&c, cmd).await?.map(|_| ()))
    }

    async fn get(&mut self, c: Resource<RedisConnection>, key: String) -> Wt<Result<Option<Vec<u8>>, redis::Error>> {
        let mut cmd = ::redis::cmd("GET");
        cmd.arg(key);
        Ok(self.redis_query(&c, cmd).await?.and_then(as_payload))
    }

    async fn set(&mut self, c: Resource<RedisConnection>, key: String, value: Vec<u8>) -> Wt<Result<(), redis::Error>> {
        let mut cmd = ::redis::cmd("SET");
        cmd.arg(key).arg(value);
        Ok(self.redis_query(&c, cmd).await?.map(|_| ()))
    }

    async fn incr(&mut self, c: Resource<RedisConnection>, key: String) -> Wt<Result<i64, redis::Error>> {
        let mut cmd = ::redis::cmd("INCR");
        cmd.arg(key);
        Ok(self.redis_query(&c, cmd).await?.and_then(as_int))
    }

    async fn del(&mut self, c: Resource<RedisConnection>, keys: Vec<String>) -> Wt<Result<u32, redis::Error>> {
        let mut cmd = ::redis::cmd("DEL");
        cmd.arg(keys);
        Ok(self
            .redis_query(&c, cmd)
            .await?
            .and_then(as_int)
            .and_then(|n| u32::try_from(n).map_err(|_| redis::Error::TypeError)))
    }

    async fn sadd(&mut self, c: Resource<RedisConnection>, key: String, values: Vec<String>) -> Wt<Result<u32, redis::Error>> {
        let mut cmd = ::redis::cmd("SADD");
        cmd.arg(key).arg(values);
        Ok(self
            .redis_query(&c, cmd)
            .await?
            .and_then(as_int)
            .and_then(|n| u32::try_from(n).map_err(|_| redis::Error::TypeError)))
    }

    async fn smembers(&mut self, c: Resource<RedisConnection>, key: String) -> Wt<Result<Vec<String>, redis::Error>> {
        let mut cmd = ::redis::cmd("SMEMBERS");
        cmd.arg(key);
        Ok(self.redis_query(&c, cmd).await?.and_then(|v| {
            let mut flat = Vec::new();
            flatten(v, &mut flat).map_err(redis::Error::from)?;
            flat.into_iter()
                .map(|f| match f {
                    Flat::Binary(b) => String::from_utf8(b).map_err(|_| redis::Error::TypeError),
                    Flat::Status(s) => Ok(s),
                    _ => Err(redis::Error::TypeError),
                })
                .collect::<Result<Vec<String>, redis::Error>>()
        }))
    }

    async fn srem(&mut self, c: Resource<RedisConnection>, key: String, values: Vec<String>) -> Wt<Result<u32, redis::Error>> {
        let mut cmd = ::redis::cmd("SREM");
        cmd.arg(key).arg(values);
        Ok(self
            .redis_query(&c, cmd)
            .await?
            .and_then(as_int)
            .and_then(|n| u32::try_from(n).map_err(|_| redis::Error::TypeError)))
    }

    async fn execute(
        &mut self,
        c: Resource<RedisConnection>,
        command: String,
        arguments: Vec<redis::RedisParameter>,
    ) -> Wt<Result<Vec<redis::RedisResult>, redis::Error>> {
        let mut cmd = ::redis::cmd(&command);
        for a in arguments {
            match a {
                redis::RedisParameter::Int64(i) => cmd.arg(i),
                redis::RedisParameter::Binary(b) => cmd.arg(b),
            };
        }
        Ok(self.redis_query(&c, cmd).await?.and_then(|v| {
            let mut flat = Vec::new();
            flatten(v, &mut flat).map_err(redis::Error::from)?;
            Ok(flat
                .into_iter()
                .map(|f| match f {
                    Flat::Nil => redis::RedisResult::Nil,
                    Flat::Status(s) => redis::RedisResult::Status(s),
                    Flat::Int(i) => redis::RedisResult::Int64(i),
                    Flat::Binary(b) => redis::RedisResult::Binary(b),
                })
                .collect())
        }))
    }

    async fn drop(&mut self, c: Resource<RedisConnection>) -> Wt<()> {
        self.table.delete(c)?;
        Ok(())
    }
}
