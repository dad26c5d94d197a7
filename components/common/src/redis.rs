//! Outbound Redis (`fermyon:spin/redis`): one connection per request, opened on first use.

use spin_sdk::redis::{Connection, RedisParameter};

use crate::effects::EffectError;

/// The Redis connection of one request, opened on first use.
pub struct Redis<'a> {
    url: &'a str,
    connection: Option<Connection>,
}

impl<'a> Redis<'a> {
    /// A connection to `url` (empty: Redis is not configured), not opened yet.
    pub fn new(url: &'a str) -> Redis<'a> {
        Redis {
            url,
            connection: None,
        }
    }

    /// The connection, opened now if it was not.
    pub fn connection(&mut self) -> Result<&Connection, EffectError> {
        if self.url.is_empty() {
            return Err(EffectError("redis_url is not set".into()));
        }
        if self.connection.is_none() {
            let conn = Connection::open(self.url)
                .map_err(|e| EffectError(format!("redis connect: {e}")))?;
            self.connection = Some(conn);
        }
        Ok(self.connection.as_ref().expect("just opened"))
    }

    /// `PUBLISH channel payload`.
    pub fn publish(&mut self, channel: &str, payload: &[u8]) -> Result<(), EffectError> {
        self.connection()?
            .publish(channel, payload)
            .map_err(|e| EffectError(format!("redis PUBLISH: {e}")))
    }
}

/// A text argument of a Redis command.
pub fn binary(s: &str) -> RedisParameter {
    RedisParameter::Binary(s.as_bytes().to_vec())
}

/// An integer argument of a Redis command (saturating: Redis integers are signed 64-bit).
pub fn int(n: u64) -> RedisParameter {
    RedisParameter::Int64(i64::try_from(n).unwrap_or(i64::MAX))
}
