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

#[test]
fn an_archive_a_deployment_refuses_is_refused_by_validate() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("evil.tar");
    std::fs::write(
        &f,
        testbed::evil::tar(&[
            testbed::evil::Entry::File("appspec.yml", "version: 0.0\nos: linux\n"),
            testbed::evil::Entry::File("../../etc/pwned", "x"),
        ]),
    )
    .unwrap();
    let run = validate(&[&f.display().to_string()]);
    run.assert_failed();
    assert!(
        run.stdout.contains("refused") || run.stderr.contains("refused"),
        "{}{}",
        run.stdout,
        run.stderr
    );
}

#[test]
fn an_archive_with_two_appspecs_is_checked_as_a_deployment_reads_it() {
    // tar keeps the later of two entries with one name; so does a deployment.
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("two.tar");
    std::fs::write(
        &f,
        testbed::evil::tar(&[
            testbed::evil::Entry::File("appspec.yml", "version: 0.0\nos: linux\n"),
            testbed::evil::Entry::File(
                "appspec.yml",
                "version: 0.0\nos: linux\nhooks:\n  AfterInstall:\n    - location: missing.sh\n",
            ),
        ]),
    )
    .unwrap();
    let run = validate(&[&f.display().to_string()]);
    run.assert_failed();
    assert!(
        run.stdout
            .contains("script missing.sh is not in the bundle")
            || run
                .stderr
                .contains("script missing.sh is not in the bundle"),
        "{}{}",
        run.stdout,
        run.stderr
    );
}

#[test]
fn the_whole_appspec_is_read_and_invalid_utf8_is_named() {
    let d = tempfile::tempdir().unwrap();
    let b = Bundle::new(d.path().join("app"));
    let comments = "# padding\n".repeat(150_000);
    b.appspec(&format!(
        "version: 0.0\nos: linux\n{comments}hooks:\n  AfterInstall:\n    - location: late.sh\n"
    ));
    let tgz = b.tgz(&d.path().join("late.tgz"));
    let run = validate(&[&tgz.display().to_string()]);
    run.assert_failed();
    let out = format!("{}{}", run.stdout, run.stderr);
    assert!(out.contains("script late.sh is not in the bundle"), "{out}");

    let bad = Bundle::new(d.path().join("bad"));
    bad.file("appspec.yml", "version: 0.0\nos: linux\n# caf\u{e9}\n");
    let raw = std::fs::read(bad.dir.join("appspec.yml")).unwrap();
    let latin1: Vec<u8> = raw
        .iter()
        .copied()
        .filter(|b| *b != 0xc3)
        .map(|b| if b == 0xa9 { 0xe9 } else { b })
        .collect();
    std::fs::write(bad.dir.join("appspec.yml"), latin1).unwrap();
    let run = validate(&[&bad.dir.display().to_string()]);
    run.assert_failed();
    let out = format!("{}{}", run.stdout, run.stderr);
    assert!(out.contains("not valid UTF-8"), "{out}");
}

#[test]
fn an_appspec_larger_than_its_bound_is_refused_unread() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("appspec.yml");
    let file = std::fs::File::create(&f).unwrap();
    file.set_len(65 << 20).unwrap(); // sparse: no disk, 65 MiB of NULs
    let run = validate(&[&f.display().to_string()]);
    run.assert_failed();
    let out = format!("{}{}", run.stdout, run.stderr);
    assert!(
        out.contains("an appspec may be at most 67108864 bytes"),
        "{out}"
    );
}

#[test]
fn every_problem_is_reported_in_one_pass_each_line_with_its_severity() {
    // A hook name typo, a misspelt key, a script missing from the bundle,
    // a warning about `except` and an unknown key of our section: one run
    // names them all, not one round at a time.
    let d = tempfile::tempdir().unwrap();
    let b = Bundle::new(d.path().join("app"));
    b.appspec("version: 0.0\nos: linux\nfiles:\n  - source: /\n    destinaton: /srv/app\nhooks:\n  AplicationStart:\n    - location: scripts/start.sh\n  ValidateService:\n    - location: scripts/missing.sh\n      timeout: 60\npermissions:\n  - object: /srv/app\n    except: [a]\nloadBalancer:\n  modee: drain\n")
        .script("scripts/start.sh", "true");
    let run = validate(&[&b.dir.display().to_string()]);
    run.assert_failed();
    let err = &run.stderr;
    for want in [
        ":4:5: error: files[0].destination: destination is required",
        ":5:5: warning: files[0].destinaton: unknown key \"destinaton\" (did you mean \"destination\"?)",
        ":7:3: warning: hooks.AplicationStart: AplicationStart is not a standard lifecycle event (did you mean \"ApplicationStart\"?)",
        ":10:7: error: hooks.ValidateService[0].location: script scripts/missing.sh is not in the bundle",
        ":13:5: warning: permissions[0].except:",
        ":16:3: error: loadBalancer.modee: unknown key \"modee\" (did you mean \"mode\"?)",
        "appspec.yml: error: 3 errors, 3 warnings",
    ] {
        assert!(err.contains(want), "missing {want:?} in\n{err}");
    }
    for line in err.lines() {
        assert!(
            line.contains(": error: ") || line.contains(": warning: "),
            "a line without its severity: {line}"
        );
    }
}
