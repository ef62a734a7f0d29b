//! The command line itself. (Its presence also makes `cargo test` build
//! the binary that the testbed's end-to-end tests run.)

use std::process::Command;

fn agent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_codedeploy-agent"))
}

#[test]
fn version_and_usage() {
    let out = agent().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("codedeploy-agent "));
    let out = agent().args(["local", "--no-such-flag"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn bad_options_exit_2_and_say_why() {
    let d = tempfile::tempdir().unwrap();
    let conf = d.path().join("c.yml");
    std::fs::write(
        &conf,
        format!(
            ":root_dir: {}\n:log_dir: {}\n",
            d.path().join("r").display(),
            d.path().join("l").display()
        ),
    )
    .unwrap();
    let out = agent()
        .args(["local", "-t", "rar", "-c"])
        .arg(&conf)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ERROR: type rar is not a valid type"));
    let out = agent()
        .args(["local", "-c"])
        .arg(d.path().join("missing.yml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}
