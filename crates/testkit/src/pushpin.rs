//! Debian's `pushpin`, started in front of an Earshot instance with an `over_http`
//! route: the proof that Pushpin (or Fastly Fanout) can stand in for the relay.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

/// How long Pushpin's processes may take to open their ports.
pub const PUSHPIN_READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Attempts at starting Pushpin when its chosen port was taken in the meantime.
const PORT_RACE_RETRIES: usize = 5;

/// Pushpin's handler ports, shifted together by `port_offset` (the client port is
/// set on its own: `port_offset` does not move it).
const HANDLER_PORTS: [u16; 4] = [5560, 5561, 5562, 5563];

/// A running Pushpin (and the zurl it sends backend requests through), killed on drop.
pub struct Pushpin {
    child: Option<Child>,
    zurl: Option<Child>,
    offset: u16,
    http_port: u16,
    _dir: tempfile::TempDir,
    log: PathBuf,
}

fn ports_free(offset: u16) -> bool {
    HANDLER_PORTS.iter().all(|p| TcpListener::bind(("127.0.0.1", p + offset)).is_ok())
}

impl Pushpin {
    /// Starts Pushpin routing every path to `backend` (`host:port`) over HTTP, signing
    /// `Grip-Sig` with Debian's default key (a backend that checks signatures refuses it).
    pub fn start(backend: std::net::SocketAddr) -> anyhow::Result<Self> {
        Self::start_with_sig_key(backend, "changeme")
    }

    /// Starts Pushpin signing `Grip-Sig` with `sig_key` — Earshot's `grip_sig_key`, which
    /// `earshot up` generates by default (`Earshot::dev_secret("grip_sig_key")`).
    pub fn start_with_sig_key(backend: std::net::SocketAddr, sig_key: &str) -> anyhow::Result<Self> {
        Self::start_with_settings(backend, sig_key, &[])
    }

    /// Like [`Pushpin::start_with_sig_key`], with `key=value` lines of pushpin.conf
    /// replaced (e.g. the benchmarks raise `message_rate` and `client_maxconn`).
    pub fn start_with_settings(backend: std::net::SocketAddr, sig_key: &str, settings: &[(&str, &str)]) -> anyhow::Result<Self> {
        // The client port comes from `free_port()`, which another process can take
        // before condure binds it: retry a few times on that one failure.
        let mut last = None;
        for _ in 0..PORT_RACE_RETRIES {
            match Self::try_start(backend, sig_key, settings) {
                Err(e) if e.to_string().contains("Address already in use") => last = Some(e),
                other => return other,
            }
        }
        Err(last.expect("at least one attempt"))
    }

    fn try_start(backend: std::net::SocketAddr, sig_key: &str, settings: &[(&str, &str)]) -> anyhow::Result<Self> {
        if Command::new("pushpin").arg("--version").output().is_err() {
            bail!("pushpin is not installed: install it with `apt-get install -y pushpin`");
        }
        let dir = tempfile::tempdir()?;
        // A pseudo-random offset in 1000..=20999 whose five ports are all free.
        let seed = std::process::id() as u16 ^ (Instant::now().elapsed().subsec_nanos() as u16);
        let offset = (0..200u16)
            .map(|i| 1000 + (seed.wrapping_add(i.wrapping_mul(97))) % 20000)
            .find(|o| ports_free(*o))
            .ok_or_else(|| anyhow!("no free port range for pushpin"))?;
        let http_port = crate::free_port();
        let ipc = |name: &str| format!("ipc://{}/{name}", dir.path().display());
        // Pushpin reaches backends through zurl; Debian's config expects a system zurl
        // under /var/run/zurl, which a container does not run. Start a private one that
        // may reach loopback (zurl denies 127.* by default).
        let zurl_conf = format!(
            "[General]\ninstance_id=\nin_spec={}\nin_stream_spec={}\nout_spec={}\nin_req_spec={}\nipc_file_mode=600\ndefpolicy=allow\nallow=\ndeny=\nmax_open_requests=2000\nbuffer_size=200000\ntimeout=600\nin_hwm=1000\nout_hwm=1000\n",
            ipc("zurl-in"),
            ipc("zurl-in-stream"),
            ipc("zurl-out"),
            ipc("zurl-req")
        );
        std::fs::write(dir.path().join("zurl.conf"), zurl_conf)?;
        let zurl = Command::new("zurl")
            .arg(format!("--config={}", dir.path().join("zurl.conf").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting zurl (installed with pushpin)")?;
        let template = std::fs::read_to_string("/etc/pushpin/pushpin.conf").context("reading /etc/pushpin/pushpin.conf")?;
        let mut conf = String::new();
        for line in template.lines() {
            let setting = settings.iter().find(|(k, _)| line.strip_prefix(k).is_some_and(|rest| rest.starts_with('=')));
            let line = if let Some((k, v)) = setting {
                format!("{k}={v}")
            } else if line == "[proxy]" {
                format!(
                    "[proxy]\nzurl_out_specs={}\nzurl_out_stream_specs={}\nzurl_in_specs={}",
                    ipc("zurl-in"),
                    ipc("zurl-in-stream"),
                    ipc("zurl-out")
                )
            } else if line.starts_with("sig_key=") {
                format!("sig_key={sig_key}")
            } else if line.starts_with("http_port=") {
                format!("http_port={http_port}")
            } else if line.starts_with("rundir=") {
                format!("rundir={}", dir.path().display())
            } else if line.starts_with("logdir=") {
                format!("logdir={}", dir.path().display())
            } else if line.starts_with("port_offset=") {
                format!("port_offset={offset}")
            } else if line.starts_with("routesfile=") {
                "routesfile=routes".to_owned()
            } else {
                line.to_owned()
            };
            conf.push_str(&line);
            conf.push('\n');
        }
        let conf_path = dir.path().join("pushpin.conf");
        std::fs::write(&conf_path, conf)?;
        std::fs::write(dir.path().join("routes"), format!("* {backend},over_http\n"))?;
        let log = dir.path().join("pushpin.log");
        let child = Command::new("pushpin")
            .arg("--config")
            .arg(&conf_path)
            .arg("--merge-output")
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting pushpin")?;
        let mut p = Pushpin { child: Some(child), zurl: Some(zurl), offset, http_port, _dir: dir, log };
        let deadline = Instant::now() + PUSHPIN_READY_TIMEOUT;
        while Instant::now() < deadline {
            let up = [p.http_port(), p.publish_port()]
                .iter()
                .all(|port| std::net::TcpStream::connect(("127.0.0.1", *port)).is_ok());
            if up {
                return Ok(p);
            }
            if let Some(status) = p.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("pushpin exited at start ({status}):\n{}", p.log_text());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("pushpin did not open its ports within {PUSHPIN_READY_TIMEOUT:?}:\n{}", p.log_text())
    }

    /// Port clients connect to.
    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// Port of Pushpin's HTTP publish endpoint (`/publish/`).
    pub fn publish_port(&self) -> u16 {
        5561 + self.offset
    }

    /// What Pushpin logged.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Pushpin {
    fn drop(&mut self) {
        if let Some(mut z) = self.zurl.take() {
            let _ = z.kill();
            let _ = z.wait();
        }
        if let Some(mut c) = self.child.take() {
            // SIGTERM lets pushpin stop its subprocesses (condure, proxy, handler).
            #[allow(unsafe_code)]
            // SAFETY: signalling our own child by pid.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if c.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
