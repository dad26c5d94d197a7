//! The machine and the versions a run measured, printed above the tables.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

/// First line a command prints (stdout, else stderr), or `not found`.
fn version(cmd: &str, args: &[&str]) -> String {
    match Command::new(cmd).args(args).output() {
        Ok(o) => {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        }
        Err(_) => "not found".into(),
    }
}

fn cpuinfo_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn memory() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or_else(
            || "unknown".into(),
            |kib| format!("{:.1} GiB", kib / 1024.0 / 1024.0),
        )
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The machine block: CPUs, model, memory, kernel, load, and each component's version.
pub(crate) fn describe(earshot_bin: Option<&Path>, nofile: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "| machine | |\n|---|---|");
    let _ = writeln!(out, "| CPUs (nproc) | {} |", crate::procfs::cpu_count());
    let _ = writeln!(out, "| model | {} |", cpuinfo_model());
    let _ = writeln!(out, "| memory | {} |", memory());
    let _ = writeln!(out, "| kernel | {} |", version("uname", &["-sr"]));
    let _ = writeln!(out, "| load average at start | {} |", load());
    let _ = writeln!(out, "| open-file limit (bench and servers) | {nofile} |");
    if let Some(bin) = earshot_bin {
        let _ = writeln!(
            out,
            "| earshot | {} (release build) |",
            version(&bin.display().to_string(), &["--version"])
        );
    }
    let _ = writeln!(out, "| pushpin | {} |", version("pushpin", &["--version"]));
    let _ = writeln!(out, "| condure | {} |", version("condure", &["--version"]));
    let _ = writeln!(out, "| zurl | {} |", version("zurl", &["--version"]));
    let _ = writeln!(
        out,
        "| redis-server | {} |",
        version("redis-server", &["--version"])
    );
    let _ = writeln!(out, "| rustc | {} |", version("rustc", &["--version"]));
    out
}
