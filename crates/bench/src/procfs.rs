//! What the bench reads about the processes it measures, from `/proc`: resident memory,
//! CPU time, which processes a started server consists of; and the two knobs it turns
//! on them: the open-file limit and CPU affinity.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Resident memory of `pid` in bytes (`VmRSS`), or `None` once it is gone.
pub(crate) fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Clock ticks per second of `/proc/<pid>/stat` times.
fn ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a constant of the running system.
    #[allow(unsafe_code)]
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// User + system CPU time `pid` has used so far (all its threads), or `None` once gone.
pub(crate) fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after its closing paren are fixed.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_nanos(
        ticks * 1_000_000_000 / ticks_per_second(),
    ))
}

/// `(pid, parent pid, command name)` of every process.
fn processes() -> Vec<(u32, u32, String)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let open = stat.find('(')?;
            let close = stat.rfind(')')?;
            let comm = stat[open + 1..close].to_owned();
            let ppid = stat[close + 2..].split_whitespace().nth(1)?.parse().ok()?;
            Some((pid, ppid, comm))
        })
        .collect()
}

/// Direct children of this process named `comm` (the kernel's 15-character name).
pub(crate) fn my_children_named(comm: &str) -> HashSet<u32> {
    let me = std::process::id();
    processes()
        .into_iter()
        .filter(|(_, ppid, c)| *ppid == me && c == comm)
        .map(|(p, _, _)| p)
        .collect()
}

/// `root` and all its descendants.
pub(crate) fn with_descendants(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (pid, ppid, _) in processes() {
        children.entry(ppid).or_default().push(pid);
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        if let Some(c) = children.get(&out[i]) {
            out.extend(c);
        }
        i += 1;
    }
    out
}

/// The one new child named `comm` that appeared since `before` was taken, waiting
/// briefly for it (a child is listed as soon as it is forked).
pub(crate) fn new_child(comm: &str, before: &HashSet<u32>) -> anyhow::Result<u32> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let new: Vec<u32> = my_children_named(comm)
            .difference(before)
            .copied()
            .collect();
        match new.as_slice() {
            [one] => return Ok(*one),
            [] if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            [] => bail!("no new `{comm}` child process appeared"),
            many => bail!("several new `{comm}` child processes: {many:?}"),
        }
    }
}

/// Memory the kernel says is available for new work (`MemAvailable`), in bytes.
pub(crate) fn mem_available() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(u64::MAX, |kib| kib * 1024)
}

/// Sum of resident memory over `pids`, in bytes (vanished processes count 0).
pub(crate) fn rss_sum(pids: &[u32]) -> u64 {
    pids.iter().filter_map(|p| rss_bytes(*p)).sum()
}

/// Sum of CPU time over `pids`.
pub(crate) fn cpu_sum(pids: &[u32]) -> Duration {
    pids.iter().filter_map(|p| cpu_time(*p)).sum()
}

/// Raises this process's open-file limit (children inherit it) to at least `want`
/// where allowed: the soft limit up to the hard one always, the hard one too when
/// running as root. Returns the soft limit in force afterwards.
pub(crate) fn raise_nofile(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    if rc != 0 {
        return 1024;
    }
    let nr_open: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(lim.rlim_max);
    if lim.rlim_max < want {
        let raised = libc::rlimit {
            rlim_cur: want.min(nr_open),
            rlim_max: want.min(nr_open),
        };
        // SAFETY: setrlimit reads the struct we own; failure (not root) is handled below.
        #[allow(unsafe_code)]
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return raised.rlim_cur;
        }
    }
    let soft = libc::rlimit {
        rlim_cur: lim.rlim_max.min(want.max(lim.rlim_cur)),
        rlim_max: lim.rlim_max,
    };
    // SAFETY: as above.
    #[allow(unsafe_code)]
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &soft) } == 0 {
        soft.rlim_cur
    } else {
        lim.rlim_cur
    }
}

/// Number of CPUs this machine has online.
pub(crate) fn cpu_count() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Pins every thread of `pid` to the CPUs in `cpus` (threads it starts later inherit
/// the mask of the thread that starts them).
pub(crate) fn pin(pid: u32, cpus: &[usize]) -> anyhow::Result<()> {
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
    #[allow(unsafe_code)]
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        // SAFETY: CPU_SET writes a bit of the set we own; `c` is below the CPU count.
        #[allow(unsafe_code)]
        unsafe {
            libc::CPU_SET(c, &mut set)
        };
    }
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .with_context(|| format!("listing threads of {pid}"))?;
    for t in tasks {
        let Some(tid) = t?.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        // SAFETY: sched_setaffinity reads the set we own; a thread that exited meanwhile
        // makes it fail with ESRCH, which is fine.
        #[allow(unsafe_code)]
        let rc =
            unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::ESRCH) {
                bail!("pinning thread {tid} of {pid} to {cpus:?}: {err}");
            }
        }
    }
    Ok(())
}

/// A CPU-time and wall-clock reading of a set of processes, to take a rate over a window.
pub(crate) struct CpuMeter {
    pids: Vec<u32>,
    cpu: Duration,
    at: Instant,
}

impl CpuMeter {
    /// Starts a window over `pids`.
    pub(crate) fn start(pids: &[u32]) -> Self {
        CpuMeter {
            pids: pids.to_vec(),
            cpu: cpu_sum(pids),
            at: Instant::now(),
        }
    }

    /// CPU time used since the start and the wall time that passed.
    pub(crate) fn read(&self) -> (Duration, Duration) {
        (
            cpu_sum(&self.pids).saturating_sub(self.cpu),
            self.at.elapsed(),
        )
    }

    /// CPU used since the start, as a percentage of one core.
    pub(crate) fn percent(&self) -> f64 {
        let (cpu, wall) = self.read();
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64().max(1e-9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_memory_and_cpu() {
        let me = std::process::id();
        assert!(rss_bytes(me).unwrap() > 1024 * 1024);
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(30) {
            std::hint::black_box(0u64);
        }
        assert!(cpu_time(me).unwrap() > Duration::ZERO);
        assert!(with_descendants(me).contains(&me));
    }
}
