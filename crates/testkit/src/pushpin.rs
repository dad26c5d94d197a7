//! Debian's `pushpin`, started in front of an Earshot instance with an `over_http`
//! route: the proof that Pushpin (or Fastly Fanout) can stand in for the relay.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

/// How long Pushpin's processes may take to open their ports.
pub const PUSHPIN_READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Pushpin's default ports, shifted together by `port_offset`.
const PUSHPIN_PORTS: [u16; 5] = [7999, 5560, 5561, 5562, 5563];

/// A running Pushpin, killed on drop.
pub struct Pushpin {
    child: Option<Child>,
    offset: u16,
    _dir: tempfile::TempDir,
    log: PathBuf,
}

fn ports_free(offset: u16) -> bool {
    PUSHPIN_PORTS.iter().all(|p| TcpListener::bind(("127.0.0.1", p + offset)).is_ok())
}

impl Pushpin {
    /// Starts Pushpin routing every path to `backend` (`host:port`) over HTTP.
    pub fn start(backend: std::net::SocketAddr) -> anyhow::Result<Self> {
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
        let template = std::fs::read_to_string("/etc/pushpin/pushpin.conf").context("reading /etc/pushpin/pushpin.conf")?;
        let mut conf = String::new();
        for line in template.lines() {
            let line = if line.starts_with("rundir=") {
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
            .arg("--id")
            .arg(format!("earshot-test-{offset}"))
            .arg("--merge-output")
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting pushpin")?;
        let mut p = Pushpin { child: Some(child), offset, _dir: dir, log };
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
        7999 + self.offset
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
