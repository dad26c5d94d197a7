//! `earshot demo-wav`: writes the capture agent's demo audio (`earshot_agent::demo`) to a
//! file or stdout.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use earshot_agent::demo::{self, DemoError, Pattern, DEMO_FORMAT, MAX_SECONDS_EACH};
use earshot_agent::wav;

/// `earshot demo-wav` flags.
#[derive(clap::Args)]
pub(crate) struct DemoWavArgs {
    /// Output file (`-` for stdout).
    out: PathBuf,
    /// Segments to write.
    #[arg(long, value_enum, default_value = "tone-silence-tone")]
    pattern: Pattern,
    /// Length of each segment, seconds.
    #[arg(long, default_value_t = 1.0)]
    seconds_each: f64,
}

/// Runs `earshot demo-wav`.
pub(crate) fn run(args: DemoWavArgs) -> anyhow::Result<()> {
    // Checked before the file is created, so a bad flag leaves nothing behind.
    let samples = demo::samples(args.pattern, args.seconds_each).map_err(flag_error)?;
    let seconds = samples.len() as f64 / f64::from(DEMO_FORMAT.sample_rate);
    if args.out.as_os_str() == "-" {
        let mut out = std::io::stdout().lock();
        wav::write_wav(&mut out, DEMO_FORMAT, &samples).context("writing the WAV to stdout")?;
    } else {
        let file = std::fs::File::create(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
        let mut out = std::io::BufWriter::new(file);
        wav::write_wav(&mut out, DEMO_FORMAT, &samples).with_context(|| format!("writing {}", args.out.display()))?;
        out.into_inner().map_err(|e| e.into_error()).and_then(|f| f.sync_all()).with_context(|| format!("writing {}", args.out.display()))?;
        eprintln!(
            "wrote {}: {seconds:.1} s of 16 kHz mono 16-bit PCM ({:?}, {} data bytes)",
            args.out.display(),
            args.pattern,
            samples.len() * 2
        );
    }
    std::io::stderr().flush().ok();
    Ok(())
}

/// The library's refusal in the words of the flag that caused it.
fn flag_error(e: DemoError) -> anyhow::Error {
    match e {
        DemoError::BadLength(_) => anyhow::anyhow!("--seconds-each must be more than 0 and at most {MAX_SECONDS_EACH}"),
        other => other.into(),
    }
}
