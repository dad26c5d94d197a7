//! Outbound Redis for components (`fermyon:spin/redis`), over the `redis` crate.
//!
//! Connections are multiplexed and shared by every instance that opens the same
//! address: a component instance lives for one request, a TCP connection to Redis
//! should not.

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};
use tokio::sync::Mutex;

/// How long opening a Redis connection may take. Short, because the health probe
/// must answer `down` quickly when Redis is gone rather than hang the probe.
pub const REDIS_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// How long one Redis command may take before the component gets an error. Redis
/// answers in microseconds on a healthy link; a second means it is stalled.
pub const REDIS_RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a Redis operation failed (maps onto `fermyon:spin/redis.error`).
#[derive(Debug, thiserror::Error)]
pub enum RedisOpError {
    /// The address is malformed or not allowed for this component.
    #[error("invalid address")]
    InvalidAddress,
    /// A value had an unexpected type.
    #[error("type error")]
    TypeError,
    /// Redis or the connection failed.
    #[error("{0}")]
    Other(String),
}

/// The guest's handle: which address it opened (the connection lives in the pool).
#[derive(Debug, Clone)]
pub struct RedisConnection {
    /// Address as opened by the guest.
    pub address: String,
}

/// Shared multiplexed connections by address.
#[derive(Default)]
pub struct RedisPool {
    conns: Mutex<HashMap<String, MultiplexedConnection>>,
}

impl RedisPool {
    /// A connection to `address`, reusing a live one.
    pub async fn connection(&self, address: &str) -> Result<MultiplexedConnection, RedisOpError> {
        let mut conns = self.conns.lock().await;
        if let Some(c) = conns.get(address) {
            return Ok(c.clone());
        }
        let client = redis::Client::open(address).map_err(|_| RedisOpError::InvalidAddress)?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(REDIS_CONNECT_TIMEOUT))
            .set_response_timeout(Some(REDIS_RESPONSE_TIMEOUT));
        let conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| RedisOpError::Other(format!("connect {}: {e}", redact_url(address))))?;
        conns.insert(address.to_owned(), conn.clone());
        Ok(conn)
    }

    /// Forgets the connection to `address` after an I/O failure, so the next use
    /// reconnects instead of failing forever.
    pub async fn invalidate(&self, address: &str) {
        self.conns.lock().await.remove(address);
    }

    /// Runs one command, reconnecting on the next call if the link broke.
    pub async fn query(&self, address: &str, cmd: &redis::Cmd) -> Result<Value, RedisOpError> {
        let mut conn = self.connection(address).await?;
        match cmd.query_async::<Value>(&mut conn).await {
            Ok(v) => Ok(v),
            Err(e) => {
                if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_unrecoverable_error() {
                    self.invalidate(address).await;
                }
                Err(RedisOpError::Other(e.to_string()))
            }
        }
    }
}

/// Hides a password in a Redis URL before it reaches a log or an error.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

/// One flattened result of `execute`, as the WIT variant carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flat {
    /// nil
    Nil,
    /// simple string
    Status(String),
    /// integer
    Int(i64),
    /// bulk string
    Binary(Vec<u8>),
}

/// Flattens a reply into the list `execute` returns. Arrays (XRANGE, SMEMBERS…) are
/// flattened depth-first, which is what Spin's own host does.
pub fn flatten(value: Value, out: &mut Vec<Flat>) -> Result<(), RedisOpError> {
    match value {
        Value::Nil => out.push(Flat::Nil),
        Value::Int(i) => out.push(Flat::Int(i)),
        Value::BulkString(b) => out.push(Flat::Binary(b)),
        Value::SimpleString(s) => out.push(Flat::Status(s)),
        Value::Okay => out.push(Flat::Status("OK".into())),
        Value::Array(items) | Value::Set(items) => {
            for v in items {
                flatten(v, out)?;
            }
        }
        Value::Map(pairs) => {
            for (k, v) in pairs {
                flatten(k, out)?;
                flatten(v, out)?;
            }
        }
        Value::Boolean(b) => out.push(Flat::Int(i64::from(b))),
        Value::Double(d) => out.push(Flat::Binary(d.to_string().into_bytes())),
        Value::VerbatimString { text, .. } => out.push(Flat::Binary(text.into_bytes())),
        Value::ServerError(e) => return Err(RedisOpError::Other(format!("{e:?}"))),
        _ => return Err(RedisOpError::TypeError),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flattens_nested_replies() {
        let v = Value::Array(vec![
            Value::BulkString(b"1-0".to_vec()),
            Value::Array(vec![Value::BulkString(b"f".to_vec()), Value::Int(3)]),
            Value::Nil,
            Value::Okay,
        ]);
        let mut out = Vec::new();
        flatten(v, &mut out).unwrap();
        assert_eq!(
            out,
            vec![
                Flat::Binary(b"1-0".to_vec()),
                Flat::Binary(b"f".to_vec()),
                Flat::Int(3),
                Flat::Nil,
                Flat::Status("OK".into())
            ]
        );
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact_url("redis://u:secret@h:1/0"), "redis://***@h:1/0");
        assert_eq!(redact_url("redis://h:1"), "redis://h:1");
    }
}
