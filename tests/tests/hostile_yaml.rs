//! A few hundred bytes of YAML aliases must not take the host down: the
//! appspec and the agent's configuration are read against a node budget,
//! and the error names the file and the line. Each run is under a memory
//! limit (prlimit), so an unbounded expansion fails the test instead of
//! waking the kernel's OOM killer.

use std::fs;
use std::process::Command;
use std::time::Duration;

use testbed::bundle::Bundle;
use testbed::*;

/// Ten anchors of ten aliases each: 10^10 nodes if expanded, in 0.5 kB.
fn alias_bomb() -> String {
    let mut doc = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..10 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        doc.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    doc
}

/// The agent binary under a 1 GiB address-space limit.
fn limited(args: &[&str]) -> Command {
    let mut c = Command::new("prlimit");
    c.arg("--as=1073741824")
        .arg("--")
        .arg(agent_bin())
        .args(args);
    c
}

fn run(mut c: Command) -> Run {
    run_with_deadline(&mut c, Duration::from_secs(60))
}

#[test]
fn validate_and_local_refuse_an_alias_bomb_in_the_appspec() {
    let host = Host::new();
    let b = Bundle::new(host.path("bundle"));
    let appspec = format!("version: 0.0\nos: linux\n{}", alias_bomb());
    assert!(appspec.len() < 1024);
    b.appspec(&appspec);
    let dir = b.dir.display().to_string();

    let v = run(limited(&["validate", &dir]));
    assert!(!v.status.success(), "{}{}", v.stdout, v.stderr);
    let out = format!("{}{}", v.stdout, v.stderr);
    assert!(out.contains("alias bomb"), "{out}");
    assert!(
        out.contains("appspec.yml:"),
        "names the file and line: {out}"
    );
    assert!(!out.contains("memory allocation"), "{out}");

    let mut c = limited(&["local", "-c", &host.conf.display().to_string(), "-l", &dir]);
    c.current_dir(host.path(""));
    let l = run(c);
    assert_eq!(l.status.code(), Some(1), "{}{}", l.stdout, l.stderr);
    assert!(l.stdout.contains("alias bomb"), "{}", l.stdout);
}

#[test]
fn an_alias_bomb_in_the_agent_configuration_is_a_clear_error() {
    let host = Host::new();
    let conf = host.path("bomb.yml");
    fs::write(&conf, format!(":root_dir: /tmp/x\n{}", alias_bomb())).unwrap();
    let conf = conf.display().to_string();
    for args in [
        vec!["local", "-c", conf.as_str(), "-l", "."],
        vec!["--config_file", conf.as_str(), "run"],
    ] {
        let r = run(limited(&args));
        assert!(!r.status.success(), "{args:?}");
        let out = format!("{}{}", r.stdout, r.stderr);
        assert!(
            out.contains("bomb.yml:") && out.contains("alias bomb"),
            "{args:?}: {out}"
        );
    }
}
