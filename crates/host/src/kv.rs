//! The key-value capability: a trait naming it, a SQLite implementation (Spin's default
//! backend for the `default` store), and the per-component grant check Spin performs.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};

/// Why a key-value operation failed; mapped onto each WIT interface's error variant.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// The component's manifest does not list the store label.
    #[error("access denied")]
    AccessDenied,
    /// No store with that label is configured on this host.
    #[error("no such store")]
    NoSuchStore,
    /// The backend failed.
    #[error("{0}")]
    Other(String),
}

impl From<rusqlite::Error> for KvError {
    fn from(e: rusqlite::Error) -> Self {
        KvError::Other(e.to_string())
    }
}

/// A key-value backend holding every configured store, addressed by label.
pub trait KeyValueBackend: Send + Sync {
    /// Value of `key`, if any.
    fn get(&self, store: &str, key: &str) -> Result<Option<Vec<u8>>, KvError>;
    /// Sets `key` to `value`.
    fn set(&self, store: &str, key: &str, value: &[u8]) -> Result<(), KvError>;
    /// Removes `key` (no error when absent).
    fn delete(&self, store: &str, key: &str) -> Result<(), KvError>;
    /// Whether `key` exists.
    fn exists(&self, store: &str, key: &str) -> Result<bool, KvError>;
    /// Every key of the store.
    fn keys(&self, store: &str) -> Result<Vec<String>, KvError>;
    /// Atomically adds `delta` to the integer at `key` (absent = 0); returns the new value.
    fn increment(&self, store: &str, key: &str, delta: i64) -> Result<i64, KvError>;
    /// Sets `key` to `new` only if its value is still `expected`; returns whether it did.
    fn compare_and_swap(
        &self,
        store: &str,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, KvError>;
}

/// SQLite-backed stores in one file (Spin's layout: one table keyed by store and key).
pub struct SqliteKv {
    conn: Mutex<Connection>,
}

/// How long a writer waits on SQLite's lock before failing, in milliseconds: two
/// relays on one file (or a test and the server) contend only for microseconds.
const SQLITE_BUSY_TIMEOUT_MS: u64 = 5_000;

impl SqliteKv {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, KvError> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(|e| KvError::Other(format!("{}: {e}", dir.display())))?;
            }
        }
        let conn = Connection::open(path)?;
        Self::init(conn)
    }

    /// An in-memory database (for unit tests and throwaway runs).
    pub fn in_memory() -> Result<Self, KvError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Self, KvError> {
        conn.busy_timeout(std::time::Duration::from_millis(SQLITE_BUSY_TIMEOUT_MS))?;
        // WAL + NORMAL: a crash can lose the last transactions but never corrupts the
        // file, and writes stop costing an fsync each (the KV holds presence and
        // revocations, not audio).
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS spin_key_value (
                store TEXT NOT NULL,
                key   TEXT NOT NULL,
                value BLOB NOT NULL,
                PRIMARY KEY (store, key)
            )",
        )?;
        Ok(SqliteKv { conn: Mutex::new(conn) })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written (statements
        // are atomic), so a poisoned lock is safe to keep using.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl KeyValueBackend for SqliteKv {
    fn get(&self, store: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self
            .conn()
            .prepare_cached("SELECT value FROM spin_key_value WHERE store = ?1 AND key = ?2")?
            .query_row(params![store, key], |r| r.get::<_, Vec<u8>>(0))
            .optional()?)
    }

    fn set(&self, store: &str, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.conn()
            .prepare_cached(
                "INSERT INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT(store, key) DO UPDATE SET value = excluded.value",
            )?
            .execute(params![store, key, value])?;
        Ok(())
    }

    fn delete(&self, store: &str, key: &str) -> Result<(), KvError> {
        self.conn()
            .prepare_cached("DELETE FROM spin_key_value WHERE store = ?1 AND key = ?2")?
            .execute(params![store, key])?;
        Ok(())
    }

    fn exists(&self, store: &str, key: &str) -> Result<bool, KvError> {
        Ok(self.get(store, key)?.is_some())
    }

    fn keys(&self, store: &str) -> Result<Vec<String>, KvError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT key FROM spin_key_value WHERE store = ?1 ORDER BY key")?;
        let keys = stmt
            .query_map(params![store], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(keys)
    }

    fn increment(&self, store: &str, key: &str, delta: i64) -> Result<i64, KvError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let current: Option<Vec<u8>> = tx
            .query_row(
                "SELECT value FROM spin_key_value WHERE store = ?1 AND key = ?2",
                params![store, key],
                |r| r.get(0),
            )
            .optional()?;
        let current = match current {
            None => 0,
            Some(bytes) => std::str::from_utf8(&bytes)
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
                .ok_or_else(|| KvError::Other(format!("value at `{key}` is not an integer")))?,
        };
        let next = current
            .checked_add(delta)
            .ok_or_else(|| KvError::Other(format!("increment of `{key}` overflows")))?;
        tx.execute(
            "INSERT INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3)
             ON CONFLICT(store, key) DO UPDATE SET value = excluded.value",
            params![store, key, next.to_string().into_bytes()],
        )?;
        tx.commit()?;
        Ok(next)
    }

    fn compare_and_swap(
        &self,
        store: &str,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, KvError> {
        let conn = self.conn();
        let changed = match expected {
            Some(old) => conn
                .prepare_cached(
                    "UPDATE spin_key_value SET value = ?4 WHERE store = ?1 AND key = ?2 AND value = ?3",
                )?
                .execute(params![store, key, old, new])?,
            None => conn
                .prepare_cached("INSERT OR IGNORE INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3)")?
                .execute(params![store, key, new])?,
        };
        Ok(changed == 1)
    }
}

/// The store labels one component may open, checked the way Spin checks them.
#[derive(Debug, Clone, Default)]
pub struct KvGrants {
    granted: Vec<String>,
}

impl KvGrants {
    /// Grants from the component's `key_value_stores`.
    pub fn new(granted: Vec<String>) -> Self {
        KvGrants { granted }
    }

    /// Spin answers `access-denied` for a label the component was not granted, and
    /// `no-such-store` for a granted label the host does not provide.
    pub fn check(&self, label: &str, configured: &[String]) -> Result<(), KvError> {
        if !self.granted.iter().any(|g| g == label) {
            return Err(KvError::AccessDenied);
        }
        if !configured.iter().any(|c| c == label) {
            return Err(KvError::NoSuchStore);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_delete_keys_are_per_store() {
        let kv = SqliteKv::in_memory().unwrap();
        kv.set("default", "a", b"1").unwrap();
        kv.set("other", "a", b"2").unwrap();
        assert_eq!(kv.get("default", "a").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(kv.keys("other").unwrap(), ["a"]);
        kv.delete("default", "a").unwrap();
        assert!(!kv.exists("default", "a").unwrap());
        assert!(kv.exists("other", "a").unwrap());
    }

    #[test]
    fn increment_and_cas_are_conditional() {
        let kv = SqliteKv::in_memory().unwrap();
        assert_eq!(kv.increment("s", "n", 5).unwrap(), 5);
        assert_eq!(kv.increment("s", "n", -2).unwrap(), 3);
        assert!(kv.compare_and_swap("s", "c", None, b"x").unwrap());
        assert!(!kv.compare_and_swap("s", "c", None, b"y").unwrap());
        assert!(!kv.compare_and_swap("s", "c", Some(b"z"), b"y").unwrap());
        assert!(kv.compare_and_swap("s", "c", Some(b"x"), b"y").unwrap());
        assert_eq!(kv.get("s", "c").unwrap().as_deref(), Some(&b"y"[..]));
        kv.set("s", "bad", b"nope").unwrap();
        assert!(kv.increment("s", "bad", 1).is_err());
    }

    #[test]
    fn grants_distinguish_denied_from_missing() {
        let g = KvGrants::new(vec!["default".into(), "cache".into()]);
        let configured = vec!["default".to_owned()];
        assert!(g.check("default", &configured).is_ok());
        assert!(matches!(g.check("cache", &configured), Err(KvError::NoSuchStore)));
        assert!(matches!(g.check("secret", &configured), Err(KvError::AccessDenied)));
    }
}
