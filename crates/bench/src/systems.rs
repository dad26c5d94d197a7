//! The systems under test, each started fresh for a scenario through the shared test
//! harness: Earshot (relay + embedded components), Earshot relaying over HTTP to a
//! second Earshot (`--backend`), Pushpin in front of Earshot's components
//! (`over_http`), or any running server given with `--target`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use earshot_testkit::pushpin::Pushpin;
use earshot_testkit::{Earshot, EarshotBuilder, RedisServer};

use crate::procfs;

/// Connection caps handed to `earshot up` for the bench: the defaults (64 per IP,
/// 50,000 in total) protect a production relay; the bench holds up to 100k from 16
/// loopback addresses on purpose.
const BENCH_MAX_CONNECTIONS: &str = "10000000";

/// Lines of Pushpin's log shown when a scenario fails against it.
const DIAGNOSTIC_LINES: usize = 30;

/// Attempts to start Pushpin: its client port comes from the harness's `free_port()`
/// (free on 127.0.0.1), but condure binds 0.0.0.0:port, which any of the tens of
/// thousands of load-side sockets on 127.0.0.x (open or in TIME_WAIT) may hold.
const PUSHPIN_START_ATTEMPTS: usize = 40;

/// Pushpin settings raised from Debian's pushpin.conf, so the comparison measures the
/// engine rather than a throttle: `message_rate=2500` (messages/s the handler sends)
/// caps fan-out at ~2,500 deliveries/s, `message_hwm=25000` bounds what queues behind
/// it, `client_maxconn=50000` caps connections below the idle scenario's 100k.
pub(crate) const PUSHPIN_SETTINGS: [(&str, &str); 3] = [
    ("message_rate", "1000000"),
    ("message_hwm", "1000000"),
    ("client_maxconn", "200000"),
];

/// How channel messages are published for the fan-out scenario.
#[derive(Clone)]
pub(crate) enum Publish {
    /// `PUBLISH earshot:grip:<channel> <item JSON>` on this Redis (every Earshot relay
    /// subscribed to the channel delivers it).
    Redis(String),
    /// `POST` GRIP items to this URL (Earshot's or Pushpin's `/publish/`).
    Http(String),
}

/// A running system under test and what the bench needs to load and observe it.
pub(crate) struct System {
    /// Column name in the tables.
    pub(crate) name: String,
    /// `ws://127.0.0.1:<port>` clients connect to.
    pub(crate) ws_base: String,
    /// The JWT secret tokens are signed with.
    pub(crate) secret: String,
    /// Where fan-out messages are published.
    pub(crate) publish: Publish,
    /// Root processes of the relay (their descendants count too).
    relay_roots: Vec<u32>,
    /// Root processes that host the components behind a separate relay.
    backend_roots: Vec<u32>,
    /// The Redis behind the system, if the bench started it.
    pub(crate) redis_pid: Option<u32>,
    redis: Option<RedisServer>,
    // Dropped in order: Pushpin before the Earshots behind it, Redis last.
    _pushpin: Option<Pushpin>,
    _earshots: Vec<Earshot>,
}

/// Where the `earshot` binary is and how to start Redis next to it.
pub(crate) struct Launcher {
    pub(crate) bin: PathBuf,
}

fn earshot_child(builder: EarshotBuilder) -> anyhow::Result<(Earshot, u32)> {
    let before = procfs::my_children_named("earshot");
    let builder = match std::env::var("EARSHOT_BENCH_LOG") {
        Ok(filter) => builder.env("EARSHOT_LOG", &filter),
        Err(_) => builder,
    };
    // The server as deployed: a developer's RUST_BACKTRACE would make std capture a
    // backtrace for every error value wasmtime builds internally (3 % of the hop's CPU).
    let server = builder
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .env("EARSHOT_MAX_CONNECTIONS_PER_IP", BENCH_MAX_CONNECTIONS)
        .env("EARSHOT_MAX_CONNECTIONS", BENCH_MAX_CONNECTIONS)
        .start()?;
    let pid = procfs::new_child("earshot", &before)?;
    Ok((server, pid))
}

fn redis() -> anyhow::Result<(RedisServer, u32)> {
    let before = procfs::my_children_named("redis-server");
    let r = RedisServer::start()?;
    let pid = procfs::new_child("redis-server", &before)?;
    Ok((r, pid))
}

impl Launcher {
    fn builder(&self, redis: &RedisServer) -> EarshotBuilder {
        EarshotBuilder::new(&self.bin).redis(redis.url())
    }

    /// Earshot as shipped: relay and embedded components in one process, with Redis.
    pub(crate) fn earshot(&self) -> anyhow::Result<System> {
        let (redis, redis_pid) = redis()?;
        let (server, pid) = earshot_child(self.builder(&redis))?;
        let (_, secret) = server.dev_secrets()?;
        Ok(System {
            name: "Earshot".into(),
            ws_base: server.ws_url(""),
            secret,
            publish: Publish::Redis(redis.url()),
            relay_roots: vec![pid],
            backend_roots: vec![],
            redis_pid: Some(redis_pid),
            redis: Some(redis),
            _pushpin: None,
            _earshots: vec![server],
        })
    }

    /// Earshot's relay calling the components over HTTP (`earshot up --backend`) in a
    /// second Earshot process: the same relay code with a network hop instead of a call.
    pub(crate) fn earshot_http_backend(&self) -> anyhow::Result<System> {
        let (redis, redis_pid) = redis()?;
        // The relay posts WebSocket-over-HTTP events to this one's public port.
        let (components, backend_pid) = earshot_child(self.builder(&redis).env("EARSHOT_PUBLIC_WS_OVER_HTTP", "true"))?;
        let (_, secret) = components.dev_secrets()?;
        // The relay signs `Grip-Sig` with the key the components check.
        let sig_key = components.dev_secret("grip_sig_key")?;
        let (relay, relay_pid) = earshot_child(
            self.builder(&redis)
                .env("EARSHOT_BACKEND", &components.url(""))
                .env("EARSHOT_GRIP_SIG_KEY", &sig_key),
        )?;
        Ok(System {
            name: "--backend HTTP".into(),
            ws_base: relay.ws_url(""),
            secret,
            publish: Publish::Redis(redis.url()),
            relay_roots: vec![relay_pid],
            backend_roots: vec![backend_pid],
            redis_pid: Some(redis_pid),
            redis: Some(redis),
            _pushpin: None,
            _earshots: vec![relay, components],
        })
    }

    /// Debian's Pushpin (with its private zurl) in front of an Earshot whose embedded
    /// components answer Pushpin's WebSocket-over-HTTP requests (`over_http`).
    pub(crate) fn pushpin(&self) -> anyhow::Result<System> {
        let (redis, redis_pid) = redis()?;
        // Pushpin posts WebSocket-over-HTTP events to the public port.
        let (server, backend_pid) = earshot_child(self.builder(&redis).env("EARSHOT_PUBLIC_WS_OVER_HTTP", "true"))?;
        let (_, secret) = server.dev_secrets()?;
        let sig_key = server.dev_secret("grip_sig_key")?;
        let before_pp = procfs::my_children_named("pushpin");
        let before_zurl = procfs::my_children_named("zurl");
        let mut attempt = 0;
        let pushpin = loop {
            attempt += 1;
            // Pushpin signs `Grip-Sig` with the key the components check.
            match Pushpin::start_with_settings(server.addr(), &sig_key, &PUSHPIN_SETTINGS) {
                Ok(p) => break p,
                Err(e) if attempt < PUSHPIN_START_ATTEMPTS => eprintln!(
                    "  pushpin did not start ({}); retrying",
                    e.to_string().lines().next().unwrap_or("")
                ),
                Err(e) => return Err(e),
            }
        };
        let pp = procfs::new_child("pushpin", &before_pp)?;
        let zurl = procfs::new_child("zurl", &before_zurl)?;
        Ok(System {
            name: "Pushpin".into(),
            ws_base: format!("ws://127.0.0.1:{}", pushpin.http_port()),
            secret,
            publish: Publish::Http(format!(
                "http://127.0.0.1:{}/publish/",
                pushpin.publish_port()
            )),
            relay_roots: vec![pp, zurl],
            backend_roots: vec![backend_pid],
            redis_pid: Some(redis_pid),
            redis: Some(redis),
            _pushpin: Some(pushpin),
            _earshots: vec![server],
        })
    }
}

impl System {
    /// A server the bench did not start: loaded the same way, observed only through
    /// `pids` (if given).
    pub(crate) fn target(
        url: &str,
        secret: &str,
        publish_url: Option<&str>,
        pids: &[u32],
    ) -> anyhow::Result<Self> {
        let base = url.trim_end_matches('/');
        let ws_base = match base.split_once("://") {
            Some(("http", rest)) | Some(("ws", rest)) => format!("ws://{rest}"),
            _ => bail!("--target {url}: expected http://host:port or ws://host:port"),
        };
        let http_base = ws_base.replacen("ws://", "http://", 1);
        Ok(System {
            name: "target".into(),
            ws_base,
            secret: secret.to_owned(),
            publish: Publish::Http(
                publish_url.map_or_else(|| format!("{http_base}/publish/"), str::to_owned),
            ),
            relay_roots: pids.to_vec(),
            backend_roots: vec![],
            redis_pid: None,
            redis: None,
            _pushpin: None,
            _earshots: vec![],
        })
    }

    /// Every process of the relay now (Pushpin starts its own children).
    pub(crate) fn relay_pids(&self) -> Vec<u32> {
        self.relay_roots
            .iter()
            .flat_map(|p| procfs::with_descendants(*p))
            .collect()
    }

    /// Every process of the backend behind a separate relay.
    pub(crate) fn backend_pids(&self) -> Vec<u32> {
        self.backend_roots
            .iter()
            .flat_map(|p| procfs::with_descendants(*p))
            .collect()
    }

    /// Relay and backend: everything serving the clients (Redis excluded).
    pub(crate) fn server_pids(&self) -> Vec<u32> {
        let mut v = self.relay_pids();
        v.extend(self.backend_pids());
        v
    }

    /// The last warnings and errors of the Earshot processes and the tail of Pushpin's
    /// log, for an error report.
    pub(crate) fn diagnostics(&self) -> String {
        let tail =
            |lines: Vec<String>| lines[lines.len().saturating_sub(DIAGNOSTIC_LINES)..].join("\n");
        let mut out = String::new();
        for e in &self._earshots {
            let bad: Vec<String> = e
                .logs()
                .into_iter()
                .filter(|l| l.contains("\"WARN\"") || l.contains("\"ERROR\""))
                .collect();
            if !bad.is_empty() {
                out.push_str(&format!(
                    "earshot {} warnings and errors:\n{}\n",
                    e.addr(),
                    tail(bad)
                ));
            }
        }
        if let Some(p) = &self._pushpin {
            let text = p.log_text();
            let problems: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with("[ERR]") || l.starts_with("[WARN]"))
                .collect();
            if !problems.is_empty() {
                let first = problems[..problems.len().min(DIAGNOSTIC_LINES)].join("\n");
                out.push_str(&format!(
                    "pushpin errors and warnings ({} in all, the first ones):\n{first}\n",
                    problems.len()
                ));
            }
            // Pushpin logs request URIs with their tokens; a report shows only the code.
            let lines: Vec<String> = text
                .lines()
                .filter(|l| !l.contains(" subscribe "))
                .map(|l| match l.split_once("?token=") {
                    Some((head, rest)) => format!(
                        "{head}?token=… {}",
                        rest.split_once(' ').map_or("", |r| r.1)
                    ),
                    None => l.to_owned(),
                })
                .collect();
            out.push_str(&format!("last lines of the pushpin log:\n{}", tail(lines)));
        }
        out
    }

    /// Whether the bench can see the server's processes.
    pub(crate) fn observed(&self) -> bool {
        !self.relay_roots.is_empty()
    }

    /// Empties Redis between runs (audio streams pile up otherwise); nothing for a target.
    pub(crate) fn flush_redis(&self) -> anyhow::Result<()> {
        if let Some(r) = &self.redis {
            let out = r.cli(&["FLUSHALL"])?;
            if !out.contains("OK") {
                bail!("FLUSHALL answered {out:?}");
            }
        }
        Ok(())
    }

    /// Fails when a process the bench started has died (a crash is an error, never a number).
    pub(crate) fn check_alive(&self) -> anyhow::Result<()> {
        for &pid in self
            .relay_roots
            .iter()
            .chain(&self.backend_roots)
            .chain(self.redis_pid.iter())
        {
            if !Path::new(&format!("/proc/{pid}")).exists() || is_zombie(pid) {
                bail!("{}: process {pid} has exited", self.name);
            }
        }
        Ok(())
    }
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// The cargo target folder: `CARGO_TARGET_DIR`, else the one this bench was built
/// into (`<target>/release/earshot-bench`), else `./target` of the repository.
fn target_dir(root: &Path) -> PathBuf {
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        let d = PathBuf::from(d);
        return if d.is_absolute() { d } else { root.join(d) };
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.to_path_buf()))
        .filter(|d| d.join("release").is_dir())
        .unwrap_or_else(|| root.join("target"))
}

/// Builds the `earshot` binary in release mode (the bench measures nothing else) and
/// the wasm components; returns the binary's path.
pub(crate) fn build_release() -> anyhow::Result<PathBuf> {
    let root = earshot_testkit::repo_root();
    earshot_testkit::build_components().context("building the wasm components")?;
    let target = target_dir(&root);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args(["build", "--release", "--bin", "earshot", "--manifest-path"])
        .arg(root.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .stdout(std::process::Stdio::null())
        .status()
        .context("running cargo build --release --bin earshot")?;
    if !status.success() {
        bail!("cargo build --release --bin earshot failed ({status})");
    }
    let bin = target.join("release/earshot");
    if !bin.exists() {
        bail!("{} does not exist after the build", bin.display());
    }
    Ok(bin)
}

/// Waits until the system's processes use (almost) no CPU: the previous run's
/// stragglers (closes, DISCONNECT calls) must not count in the next one.
pub(crate) async fn settle(sys: &System, max_wait: Duration) {
    if !sys.observed() {
        tokio::time::sleep(Duration::from_millis(500)).await;
        return;
    }
    let deadline = tokio::time::Instant::now() + max_wait;
    let pids = sys.server_pids();
    while tokio::time::Instant::now() < deadline {
        let meter = procfs::CpuMeter::start(&pids);
        tokio::time::sleep(Duration::from_millis(250)).await;
        if meter.percent() < SETTLED_CPU_PERCENT {
            return;
        }
    }
}

/// CPU use (percent of one core) under which a server counts as quiet.
const SETTLED_CPU_PERCENT: f64 = 5.0;
