//! `earshot transcribe` as an operator starts it: a missing engine is said plainly, with
//! what to do, and exits non-zero instead of idling.

use std::process::{Command, Stdio};

fn transcribe(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_earshot"));
    cmd.arg("transcribe").args(args).env_remove("DEEPGRAM_API_KEY").env_remove("EARSHOT_ASR_MODEL").stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("running earshot transcribe");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn without_a_model_it_says_how_to_get_one() {
    let empty = tempfile::tempdir().unwrap();
    let (ok, out) = transcribe(&["--redis", "redis://127.0.0.1:1"], &[("EARSHOT_MODEL_DIR", empty.path().to_str().unwrap())]);
    assert!(!ok, "{out}");
    assert!(out.contains("scripts/fetch-model.sh"), "{out}");
}

#[test]
fn deepgram_without_a_key_names_the_variable() {
    let (ok, out) = transcribe(&["--redis", "redis://127.0.0.1:1", "--deepgram"], &[]);
    assert!(!ok, "{out}");
    assert!(out.contains("DEEPGRAM_API_KEY"), "{out}");
}
