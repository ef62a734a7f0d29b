//! Smaller ways a bundle, an appspec or a configuration can mislead: each
//! gets a clear error naming what the user gave, or works as `unzip` would.

use std::fs;

use testbed::bundle::Bundle;
use testbed::*;

/// `local` with the configuration file `conf` instead of the host's.
fn local_with(conf: &std::path::Path, args: &[&str]) -> Run {
    let mut c = std::process::Command::new(agent_bin());
    c.arg("local").arg("-c").arg(conf).args(args);
    run_with_deadline(&mut c, std::time::Duration::from_secs(60))
}

#[test]
fn a_zip_made_on_windows_deploys_with_slashes() {
    let host = Host::new();
    let dest = host.path("dest");
    let appspec = format!(
        "version: 0.0\nos: linux\nfiles:\n  - source: app\n    destination: {}\n",
        dest.display()
    );
    let z = testbed::evil::windows_zip(&[
        ("appspec.yml", &appspec),
        ("app\\common.txt", "shared\n"),
        ("app\\conf\\site.conf", "conf\n"),
    ]);
    let f = host.path("win.zip");
    fs::write(&f, z).unwrap();
    host.local(&["-l", &f.display().to_string(), "-t", "zip"])
        .assert_ok();
    assert_eq!(
        fs::read_to_string(dest.join("common.txt")).unwrap(),
        "shared\n"
    );
    assert_eq!(
        fs::read_to_string(dest.join("conf/site.conf")).unwrap(),
        "conf\n"
    );
}

#[test]
fn a_corrupt_bundle_is_named_as_the_user_gave_it() {
    let host = Host::new();
    let f = host.path("my-app.tgz");
    fs::write(&f, b"\x1f\x8b\x08\x00garbage that is not gzip").unwrap();
    let run = host.local(&["-l", &f.display().to_string(), "-t", "tgz"]);
    run.assert_failed();
    let line = run.event_line("DownloadBundle");
    assert!(
        line.contains("my-app.tgz") && !line.contains("bundle.tar"),
        "{line}"
    );
}

#[test]
fn numbers_too_large_for_their_field_say_so() {
    let host = Host::new();
    let b = Bundle::new(host.path("b"));
    b.appspec("version: 0.0\nos: linux\nhooks:\n  AfterInstall:\n    - location: h.sh\n      timeout: 99999999999999999999\n")
        .script("h.sh", "true");
    let v = run_with_deadline(
        std::process::Command::new(agent_bin())
            .arg("validate")
            .arg(&b.dir),
        std::time::Duration::from_secs(30),
    );
    assert!(!v.status.success());
    assert!(
        format!("{}{}", v.stdout, v.stderr).contains("is too large"),
        "{}{}",
        v.stdout,
        v.stderr
    );
    let conf = host.path("big.yml");
    fs::write(&conf, ":max_revisions: 99999999999999999999\n").unwrap();
    let r = local_with(&conf, &["-l", "."]);
    assert!(r.stderr.contains("too large"), "{}", r.stderr);
}

#[test]
fn a_root_dir_that_is_a_file_relative_or_read_only_is_named() {
    let host = Host::new();
    let b = Bundle::new(host.path("b"));
    b.appspec("version: 0.0\nos: linux\n");
    let file = host.path("not-a-dir");
    fs::write(&file, "x").unwrap();
    for (root, says) in [
        (file.display().to_string(), "is not a directory"),
        ("relative/root".to_string(), "must be an absolute path"),
    ] {
        let conf = host.path("c.yml");
        fs::write(
            &conf,
            format!(
                ":root_dir: {root}\n:log_dir: {}\n",
                host.path("logs").display()
            ),
        )
        .unwrap();
        let run = local_with(&conf, &["-l", &b.dir.display().to_string()]);
        assert_eq!(
            run.status.code(),
            Some(2),
            "{root}: {}{}",
            run.stdout,
            run.stderr
        );
        assert!(
            run.stderr.contains(":root_dir:") || run.stderr.contains("root_dir"),
            "{}",
            run.stderr
        );
        assert!(run.stderr.contains(says), "{}", run.stderr);
    }
    // Read-only: a read-only bind mount of a real directory.
    let ro = host.path("ro");
    fs::create_dir_all(&ro).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["--bind"])
        .arg(&ro)
        .arg(&ro)
        .status()
        .unwrap()
        .success()
        && std::process::Command::new("mount")
            .args(["-o", "remount,bind,ro"])
            .arg(&ro)
            .status()
            .unwrap()
            .success();
    assert!(mounted, "a read-only bind mount (needs root)");
    let conf = host.path("c.yml");
    fs::write(
        &conf,
        format!(
            ":root_dir: {}\n:log_dir: {}\n",
            ro.display(),
            host.path("logs").display()
        ),
    )
    .unwrap();
    let run = local_with(&conf, &["-l", &b.dir.display().to_string()]);
    let _ = std::process::Command::new("umount").arg(&ro).status();
    assert_eq!(run.status.code(), Some(2), "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains(":root_dir:") && run.stderr.contains("cannot write"),
        "{}",
        run.stderr
    );
}

#[test]
fn dash_a_cannot_name_a_file_outside_the_bundle() {
    let host = Host::new();
    let b = Bundle::new(host.path("b"));
    b.appspec("version: 0.0\nos: linux\n");
    for name in ["../../../../etc/passwd", "/etc/passwd"] {
        let run = host.deploy_dir(&b.dir, &["-A", name]);
        assert_eq!(run.status.code(), Some(2), "{name}");
        assert!(
            run.stderr.contains("must be a path inside the bundle"),
            "{}",
            run.stderr
        );
    }
}

#[test]
fn an_appspec_warning_is_logged_once_per_deployment() {
    let host = Host::new();
    let dest = host.path("dest");
    let b = Bundle::new(host.path("b"));
    b.file("site/a.txt", "a")
        .script("h.sh", "true")
        .appspec(&format!("version: 0.0\nos: linux\nfiles:\n  - source: site\n    destination: {}\npermissions:\n  - object: {}\n    mode: 0644\nhooks:\n  AfterInstall:\n    - location: h.sh\n  ApplicationStart:\n    - location: h.sh\n  ValidateService:\n    - location: h.sh\n", dest.display(), dest.display()));
    host.deploy_dir(&b.dir, &[]).assert_ok();
    let log = fs::read_to_string(host.path("logs/codedeploy-local.log")).unwrap();
    let n = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("mode"))
        .count();
    assert_eq!(n, 1, "{log}");
}
