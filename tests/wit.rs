//! The WIT under `wit/deps` is a verbatim copy of what the components' spin-sdk
//! binds; if spin-sdk is upgraded, this fails until the copy is refreshed.

use std::path::PathBuf;
use std::process::Command;

use earshot_testkit::repo_root;

/// The folder of the spin-sdk crate the components workspace resolves to.
fn spin_sdk_dir() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--manifest-path"])
        .arg(repo_root().join("components/Cargo.toml"))
        .output()
        .expect("cargo metadata");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let pkg = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "spin-sdk")
        .expect("components depend on spin-sdk");
    PathBuf::from(pkg["manifest_path"].as_str().unwrap()).parent().unwrap().to_path_buf()
}

#[test]
fn wit_copies_match_spin_sdk() {
    let sdk = spin_sdk_dir().join("wit/deps");
    let ours = repo_root().join("wit/deps");
    let mut compared = 0;
    for (folder, files) in [
        ("spin@2.0.0", &["key-value.wit", "redis.wit", "variables.wit"][..]),
        ("spin@unversioned", &["inbound-redis.wit", "redis-types.wit"][..]),
        ("keyvalue-2024-10-17", &["store.wit", "atomic.wit", "batch.wit", "watch.wit", "world.wit"][..]),
    ] {
        for file in files {
            let theirs = std::fs::read_to_string(sdk.join(folder).join(file)).unwrap();
            let mine = std::fs::read_to_string(ours.join(folder).join(file)).unwrap();
            assert_eq!(mine, theirs, "wit/deps/{folder}/{file} differs from spin-sdk's copy");
            compared += 1;
        }
    }
    assert_eq!(compared, 10);
}
