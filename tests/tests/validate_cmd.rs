//! `codedeploy-agent validate`: offline lint of appspecs and bundles.

use std::process::Command;
use std::time::Duration;

use testbed::bundle::Bundle;
use testbed::*;

fn validate(args: &[&str]) -> Run {
    let mut cmd = Command::new(agent_bin());
    cmd.arg("validate").args(args);
    run_with_deadline(&mut cmd, Duration::from_secs(30))
}

#[test]
fn a_valid_bundle_prints_one_summary_line() {
    let d = tempfile::tempdir().unwrap();
    let b = Bundle::new(d.path().join("app"));
    b.appspec("version: 0.0\nos: linux\nfiles:\n  - source: /web\n    destination: /var/www\nhooks:\n  ApplicationStart:\n    - location: start.sh\nloadBalancer:\n  targetGroups: auto\n")
        .file("web/index.html", "x")
        .script("start.sh", "true");
    for target in [
        b.dir.clone(),
        b.tgz_with_prefix(&d.path().join("b.tgz"), "app"),
        b.zip(&d.path().join("b.zip")),
    ] {
        let run = validate(&[&target.display().to_string()]);
        run.assert_ok();
        let out = run.stdout.trim();
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(out.ends_with("appspec.yml: OK: 1 file mapping, 1 hook (1 script), 0 permission rules, loadBalancer: drain"), "{out}");
    }
}

#[test]
fn errors_have_lines_and_fail() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("appspec.yml");
    std::fs::write(&f, "version: 0.0\nos: linux\npermissions:\n  - object: /srv\n    mode: 0899\nloadBalancer:\n  drainTimout: 30\n").unwrap();
    let run = validate(&[&f.display().to_string()]);
    run.assert_failed();
    assert!(
        run.stderr
            .contains(":5:11: error: permissions[0].mode: mode 0899 contains '8'"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains(":7:3: error: loadBalancer.drainTimout: unknown key \"drainTimout\" (did you mean \"drainTimeout\"?)"), "{}", run.stderr);
    assert!(run.stderr.contains("2 errors"), "{}", run.stderr);
}

#[test]
fn scripts_and_sources_missing_from_the_bundle_are_errors() {
    let d = tempfile::tempdir().unwrap();
    let b = Bundle::new(d.path().join("app"));
    b.appspec("version: 0.0\nos: linux\nfiles:\n  - source: /dist\n    destination: /srv\nhooks:\n  ValidateService:\n    - location: scripts/check.sh\n");
    let run = validate(&[&b.dir.display().to_string()]);
    run.assert_failed();
    assert!(
        run.stderr.contains(
            "hooks.ValidateService[0].location: script scripts/check.sh is not in the bundle"
        ),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("files[0].source: /dist is not in the bundle"),
        "{}",
        run.stderr
    );
}

#[test]
fn warnings_do_not_fail() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("appspec.yml");
    std::fs::write(
        &f,
        "version: 0.0\nos: linux\nfuture: 1\npermissions:\n  - object: /srv\n    mode: 0644\n",
    )
    .unwrap();
    let run = validate(&[&f.display().to_string()]);
    run.assert_ok();
    assert!(
        run.stderr
            .contains("warning: future: unknown top-level key"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("would apply 420"), "{}", run.stderr);
}
