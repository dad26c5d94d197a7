//! Outbound Redis for guests (`fermyon:spin/redis`): every address checked against the
//! component's `allowed_outbound_hosts` before a connection is made, commands run on the
//! shared multiplexed [`RedisPool`](crate::redis_out::RedisPool).

use wasmtime::component::Resource;

use super::Wt;
use crate::bindings::fermyon::spin2_0_0::redis;
use crate::redis_out::{flatten, redact_url, Flat, RedisConnection, RedisOpError};
use crate::state::HostState;

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

/// A reply counting members or keys (DEL, SADD, SREM), which WIT types as `u32`.
fn as_count(v: ::redis::Value) -> Result<u32, redis::Error> {
    as_int(v).and_then(|n| u32::try_from(n).map_err(|_| redis::Error::TypeError))
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
                destination = %redact_url(&address),
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
        Ok(self.redis_query(&c, cmd).await?.and_then(as_count))
    }

    async fn sadd(&mut self, c: Resource<RedisConnection>, key: String, values: Vec<String>) -> Wt<Result<u32, redis::Error>> {
        let mut cmd = ::redis::cmd("SADD");
        cmd.arg(key).arg(values);
        Ok(self.redis_query(&c, cmd).await?.and_then(as_count))
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
        Ok(self.redis_query(&c, cmd).await?.and_then(as_count))
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

#[cfg(test)]
mod tests {
    use earshot_testkit::RedisServer;

    use crate::bindings::fermyon::spin2_0_0::redis;
    use crate::host::testing::{borrow, state, Grants};
    use crate::state::HostState;
    use redis::HostConnection as _;

    fn may_reach(outbound: &[&str]) -> HostState {
        state(Grants { outbound, ..Grants::default() })
    }

    #[tokio::test]
    async fn commands_reach_a_real_redis() {
        let server = RedisServer::start().unwrap();
        let mut s = may_reach(&["redis://127.0.0.1:*"]);
        let c = s.open(server.url()).await.unwrap().unwrap();
        s.set(borrow(&c), "k".into(), b"v".to_vec()).await.unwrap().unwrap();
        assert_eq!(s.get(borrow(&c), "k".into()).await.unwrap().unwrap().as_deref(), Some(&b"v"[..]));
        assert_eq!(s.get(borrow(&c), "absent".into()).await.unwrap().unwrap(), None);
        assert_eq!(s.incr(borrow(&c), "n".into()).await.unwrap().unwrap(), 1);
        assert_eq!(s.incr(borrow(&c), "n".into()).await.unwrap().unwrap(), 2);
        assert_eq!(s.sadd(borrow(&c), "set".into(), vec!["a".into(), "b".into(), "a".into()]).await.unwrap().unwrap(), 2);
        let mut members = s.smembers(borrow(&c), "set".into()).await.unwrap().unwrap();
        members.sort();
        assert_eq!(members, ["a", "b"]);
        assert_eq!(s.srem(borrow(&c), "set".into(), vec!["a".into()]).await.unwrap().unwrap(), 1);
        assert_eq!(s.del(borrow(&c), vec!["k".into(), "n".into(), "absent".into()]).await.unwrap().unwrap(), 2);
        // INCR on a non-integer is Redis's error, surfaced as `other`.
        s.set(borrow(&c), "text".into(), b"x".to_vec()).await.unwrap().unwrap();
        assert!(matches!(s.incr(borrow(&c), "text".into()).await.unwrap(), Err(redis::Error::Other(_))));
        s.publish(borrow(&c), "chan".into(), b"hello".to_vec()).await.unwrap().unwrap();
        redis::HostConnection::drop(&mut s, c).await.unwrap();
        assert!(s.table.is_empty());
    }

    #[tokio::test]
    async fn execute_flattens_replies_like_spin() {
        let server = RedisServer::start().unwrap();
        let mut s = may_reach(&["redis://127.0.0.1:*"]);
        let c = s.open(server.url()).await.unwrap().unwrap();
        let args = |a: &[&[u8]]| a.iter().map(|b| redis::RedisParameter::Binary(b.to_vec())).collect::<Vec<_>>();
        let id = s.execute(borrow(&c), "XADD".into(), args(&[b"st", b"1-1", b"f", b"v"])).await.unwrap().unwrap();
        assert!(matches!(&id[..], [redis::RedisResult::Binary(b)] if b == b"1-1"), "{id:?}");
        let range = s.execute(borrow(&c), "XRANGE".into(), args(&[b"st", b"-", b"+"])).await.unwrap().unwrap();
        let flat: Vec<Vec<u8>> = range
            .into_iter()
            .map(|r| match r {
                redis::RedisResult::Binary(b) => b,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(flat, [b"1-1".to_vec(), b"f".to_vec(), b"v".to_vec()], "entries flattened depth-first");
        let mut with_int = args(&[b"cnt"]);
        with_int.push(redis::RedisParameter::Int64(5));
        let n = s.execute(borrow(&c), "INCRBY".into(), with_int).await.unwrap().unwrap();
        assert!(matches!(&n[..], [redis::RedisResult::Int64(5)]), "{n:?}");
        let ok = s.execute(borrow(&c), "SET".into(), args(&[b"k", b"v"])).await.unwrap().unwrap();
        assert!(matches!(&ok[..], [redis::RedisResult::Status(st)] if st == "OK"), "{ok:?}");
    }

    #[tokio::test]
    async fn an_address_outside_allowed_outbound_hosts_is_refused_before_connecting() {
        let server = RedisServer::start().unwrap();
        let clients_before = connected_clients(&server);
        for allowed in [&[][..], &["redis://example.com:*"][..], &["rediss://127.0.0.1:*"][..]] {
            let mut s = may_reach(allowed);
            let opened = s.open(server.url()).await.unwrap();
            assert!(matches!(opened, Err(redis::Error::InvalidAddress)), "allowed {allowed:?}: {opened:?}");
            assert!(s.table.is_empty(), "no handle for a refused address");
        }
        assert_eq!(connected_clients(&server), clients_before, "a refused open never connects");
        let mut s = may_reach(&[&format!("redis://127.0.0.1:{}", server.port())]);
        assert!(s.open(server.url()).await.unwrap().is_ok(), "the exact host and port is allowed");
    }

    #[tokio::test]
    async fn an_unreachable_redis_is_an_error_not_a_trap() {
        let mut s = may_reach(&["redis://127.0.0.1:*"]);
        let port = earshot_testkit::free_port();
        let opened = s.open(format!("redis://127.0.0.1:{port}")).await.unwrap();
        assert!(matches!(opened, Err(redis::Error::Other(_))), "{opened:?}");
    }

    /// Clients connected to `server`, minus the `redis-cli` asking.
    fn connected_clients(server: &RedisServer) -> u32 {
        let info = server.cli(&["INFO", "clients"]).unwrap();
        let line = info.lines().find_map(|l| l.strip_prefix("connected_clients:")).expect("INFO clients");
        line.trim().parse::<u32>().unwrap() - 1
    }
}
