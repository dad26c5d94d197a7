//! The one test harness every integration test uses: a real `redis-server` on a
//! free port, the real .wasm components built from `components/`, and the real
//! `earshot` binary started on port 0 and waited on until it is ready.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

pub mod pushpin;
pub mod raw_ws;
pub mod redis_stream;
mod server;
pub mod speech;
pub mod ws;

/// How long a started `earshot` may take to print its startup line. A cold start
/// compiles every component with Cranelift (seconds); later starts load the cache.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(180);

/// How long `redis-server` may take to answer PING after spawning.
pub const REDIS_READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The repository root (where `spin.toml` lives).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repo root exists")
}

/// Builds the wasm components once per test process (cargo itself serialises
/// concurrent builds across processes). Returns the folder with the .wasm files.
pub fn build_components() -> anyhow::Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = repo_root();
            let target_dir = root.join("components/target");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let out = Command::new(cargo)
                .args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
                .arg(root.join("components/Cargo.toml"))
                .arg("--target-dir")
                .arg(&target_dir)
                // The host build's settings must not leak into the wasm build.
                .env_remove("CARGO_TARGET_DIR")
                .env_remove("RUSTFLAGS")
                .env_remove("CARGO_BUILD_TARGET")
                .output()
                .map_err(|e| format!("running cargo to build the components: {e}"))?;
            if !out.status.success() {
                let stderr = String::from_utf8_lossy(&out.stderr);
                let hint = if stderr.contains("wasm32-wasip2") && stderr.contains("target may not be installed") {
                    "\nhint: rustup target add wasm32-wasip2"
                } else {
                    ""
                };
                return Err(format!("building the wasm components failed:\n{stderr}{hint}"));
            }
            Ok(target_dir.join("wasm32-wasip2/release"))
        })
        .clone()
        .map_err(|e| anyhow!(e))
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("binding port 0")
}

/// A real `redis-server`, private to one test, killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    persistent: bool,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts `redis-server` on a free port and waits until it answers PING.
    pub fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let mut server = RedisServer { child: None, port, persistent: false, _dir: dir };
        server.spawn()?;
        Ok(server)
    }

    /// Like [`RedisServer::start`], but every write is fsynced to an append-only file
    /// before Redis answers, so a `kill` + `restart` keeps every acknowledged write
    /// (for fault tests of "no acknowledged audio is ever lost").
    pub fn start_persistent() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let mut server = RedisServer { child: None, port, persistent: true, _dir: dir };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let durability: &[&str] =
            if self.persistent { &["--appendonly", "yes", "--appendfsync", "always"] } else { &["--appendonly", "no"] };
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string(), "--save", ""])
            .args(durability)
            .arg("--dir")
            .arg(self._dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => anyhow!(
                    "redis-server is not installed: install it with `apt-get install -y redis-server` (Debian/Ubuntu) and re-run"
                ),
                _ => anyhow!("starting redis-server: {e}"),
            })?;
        self.child = Some(child);
        let deadline = Instant::now() + REDIS_READY_TIMEOUT;
        while Instant::now() < deadline {
            if redis_ping(self.port) {
                return Ok(());
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("redis-server exited at start ({status}); port {} may be taken", self.port);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("redis-server on port {} did not answer PING within {REDIS_READY_TIMEOUT:?}", self.port)
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server with SIGKILL (to test Redis failures); `restart` brings it back
    /// on the same port (with its data, if started persistent).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port (after `kill`).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn()
    }

    /// Runs one command through `redis-cli` and returns its output.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .context("running redis-cli")?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn redis_ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

/// How to start `earshot up`.
pub struct EarshotBuilder {
    bin: PathBuf,
    manifest: PathBuf,
    redis: Option<String>,
    env: Vec<(String, String)>,
    env_removed: Vec<String>,
    state_dir: Option<PathBuf>,
    private_redis: bool,
    speech_to_text: bool,
}

/// Starts `earshot up` from the binary cargo built for this test crate.
#[macro_export]
macro_rules! earshot {
    () => {
        $crate::EarshotBuilder::new(env!("CARGO_BIN_EXE_earshot"))
    };
}

impl EarshotBuilder {
    /// A builder for the binary at `bin`, running the repository's `spin.toml`.
    pub fn new(bin: impl Into<PathBuf>) -> Self {
        EarshotBuilder {
            bin: bin.into(),
            manifest: repo_root().join("spin.toml"),
            redis: None,
            env: Vec::new(),
            env_removed: Vec::new(),
            state_dir: None,
            private_redis: false,
            speech_to_text: false,
        }
    }

    /// Runs the in-process transcription worker (the model from the default folder, or
    /// `EARSHOT_ASR_MODEL` set with [`EarshotBuilder::env`]). Off by default: tests that
    /// publish transcripts themselves must not get a worker's too.
    pub fn speech_to_text(mut self) -> Self {
        self.speech_to_text = true;
        self
    }

    /// Without [`EarshotBuilder::redis`], lets `earshot up` start its private
    /// `redis-server` (the embedded default) instead of running without Redis.
    pub fn private_redis(mut self) -> Self {
        self.private_redis = true;
        self
    }

    /// Runs another manifest.
    pub fn manifest(mut self, path: impl Into<PathBuf>) -> Self {
        self.manifest = path.into();
        self
    }

    /// Passes `--redis <url>`.
    pub fn redis(mut self, url: impl Into<String>) -> Self {
        self.redis = Some(url.into());
        self
    }

    /// Sets an environment variable (e.g. `SPIN_VARIABLE_*`).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Starts the binary without environment variable `key` (it is inherited otherwise).
    pub fn env_remove(mut self, key: &str) -> Self {
        self.env_removed.push(key.into());
        self
    }

    /// Keeps key-value data and dev secrets in `dir` (default: a fresh temp dir).
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }

    /// Builds the components and starts the server library in this process, both
    /// listeners on port 0. `SPIN_VARIABLE_*` set with [`EarshotBuilder::env`] become
    /// application variables; other environment settings are the binary's only.
    pub fn start_in_process(self) -> anyhow::Result<Earshot> {
        build_components()?;
        let temp = tempfile::tempdir()?;
        let state_dir = self.state_dir.clone().unwrap_or_else(|| temp.path().to_path_buf());
        let mut config = earshot_server::ServerConfig::for_tests(&self.manifest, &state_dir);
        config.redis = self.redis.clone();
        for (k, v) in &self.env {
            let Some(name) = k.strip_prefix("SPIN_VARIABLE_") else {
                bail!("{k}: only SPIN_VARIABLE_* settings apply to an in-process server");
            };
            config.variables.insert(name.to_ascii_lowercase(), v.clone());
        }
        let logs = Arc::new(Mutex::new(Vec::<String>::new()));
        let server = server::InProcess::start(config, logs.clone())?;
        Ok(Earshot {
            child: None,
            addr: server.public,
            internal_addr: server.internal,
            in_process: Some(server),
            logs,
            _temp: temp,
            state_dir,
        })
    }

    /// Builds the components, starts the server on port 0 and waits for its startup line.
    pub fn start(self) -> anyhow::Result<Earshot> {
        build_components()?;
        let temp = tempfile::tempdir()?;
        let state_dir = self.state_dir.clone().unwrap_or_else(|| temp.path().to_path_buf());
        let mut cmd = Command::new(&self.bin);
        cmd.arg("up")
            .args(["--listen", "127.0.0.1:0", "--internal-listen", "127.0.0.1:0", "--manifest"])
            .arg(&self.manifest)
            .arg("--kv-path")
            .arg(state_dir.join("kv.db"))
            .current_dir(&state_dir)
            .env("EARSHOT_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match &self.redis {
            Some(url) => {
                cmd.args(["--redis", url]);
            }
            // Tests without Redis mean it: no private redis-server either, unless asked.
            None if !self.private_redis => {
                cmd.arg("--no-private-redis");
            }
            None => {}
        }
        if !self.speech_to_text {
            cmd.arg("--no-asr");
        }
        for k in &self.env_removed {
            cmd.env_remove(k);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().with_context(|| format!("starting {}", self.bin.display()))?;
        let logs = Arc::new(Mutex::new(Vec::<String>::new()));
        let (tx, rx) = std::sync::mpsc::channel::<(SocketAddr, SocketAddr)>();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        {
            let logs = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    let addr = listening_address(&line);
                    // Log first, so a test that sees the address also sees the line.
                    logs.lock().unwrap().push(line);
                    if let Some(addr) = addr {
                        let _ = tx.send(addr);
                    }
                }
            });
        }
        {
            let logs = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    logs.lock().unwrap().push(line);
                }
            });
        }
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Ok((addr, internal_addr)) = rx.recv_timeout(Duration::from_millis(100)) {
                return Ok(Earshot { child: Some(child), in_process: None, addr, internal_addr, logs, _temp: temp, state_dir });
            }
            if let Some(status) = child.try_wait()? {
                // Give the reader threads a moment to collect the last lines.
                std::thread::sleep(Duration::from_millis(100));
                bail!("earshot exited before it was ready ({status}):\n{}", logs.lock().unwrap().join("\n"));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("earshot did not start within {STARTUP_TIMEOUT:?}:\n{}", logs.lock().unwrap().join("\n"));
            }
        }
    }
}

/// The public and internal addresses in the `"event":"listening"` startup line, if
/// this is it.
fn listening_address(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    if v.get("event")?.as_str()? != "listening" {
        return None;
    }
    let public = v.get("address")?.as_str()?.parse().ok()?;
    let internal = v.get("internal_address")?.as_str()?.parse().ok()?;
    Some((public, internal))
}

/// A running `earshot up` (a process, killed on drop, or in-process, drained on drop).
pub struct Earshot {
    child: Option<Child>,
    in_process: Option<server::InProcess>,
    addr: SocketAddr,
    internal_addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
    _temp: tempfile::TempDir,
    state_dir: PathBuf,
}

impl Earshot {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The internal listener's address (`/publish/`, `/metrics`).
    pub fn internal_addr(&self) -> SocketAddr {
        self.internal_addr
    }

    /// `http://<internal addr><path>`: the GRIP publish endpoint and metrics.
    pub fn internal_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.internal_addr)
    }

    /// `ws://<addr><path>`.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// Where key-value data and dev secrets live.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Every line printed so far (stdout and stderr).
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// The admin key and JWT secret the server runs with (generated dev secrets).
    pub fn dev_secrets(&self) -> anyhow::Result<(String, String)> {
        let text = std::fs::read_to_string(self.state_dir.join("dev-secrets.json"))?;
        let v: serde_json::Value = serde_json::from_str(&text)?;
        let get = |k: &str| v.get(k).and_then(|s| s.as_str()).map(str::to_owned).ok_or_else(|| anyhow!("no {k}"));
        Ok((get("admin_key")?, get("jwt_secret")?))
    }

    /// One value of the generated development secrets (`jwt_secret`, `admin_key`,
    /// `grip_sig_key`).
    pub fn dev_secret(&self, name: &str) -> anyhow::Result<String> {
        let text = std::fs::read_to_string(self.state_dir.join("dev-secrets.json"))?;
        let v: serde_json::Value = serde_json::from_str(&text)?;
        v.get(name).and_then(|s| s.as_str()).map(str::to_owned).ok_or_else(|| anyhow!("no {name} in dev-secrets.json"))
    }

    /// Sends SIGTERM and waits (bounded) for the exit status (a process only).
    pub fn sigterm(&mut self, within: Duration) -> anyhow::Result<ExitStatus> {
        let child = self.child.as_mut().ok_or_else(|| anyhow!("not a running process"))?;
        let pid = i32::try_from(child.id())?;
        // SAFETY: sending a signal to our own child process by pid.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        if rc != 0 {
            bail!("kill(SIGTERM) failed");
        }
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("earshot did not exit within {within:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Earshot {
    /// Stops an in-process server the way SIGTERM stops the binary: every WebSocket
    /// closes with 1001, in-flight requests drain.
    pub fn shutdown(&mut self) -> anyhow::Result<()> {
        match self.in_process.as_mut() {
            Some(server) => server.stop(),
            None => bail!("not an in-process server (use sigterm)"),
        }
    }
}

impl Drop for Earshot {
    fn drop(&mut self) {
        self.in_process.take();
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
