//! `local` behaves as the official `codedeploy-local` on the same bundles
//! where people's scripts and habits depend on it.

use std::fs;
use std::time::Duration;

use testbed::bundle::Bundle;
use testbed::*;

const SUCCESS_LINE: &str = "AppSpec file valid. Local deployment successful";

fn hook_bundle(host: &Host, script: &str) -> Bundle {
    let b = Bundle::new(host.path("bundle"));
    b.appspec("version: 0.0\nos: linux\nhooks:\n  ApplicationStart:\n    - location: hook.sh\n");
    b.file("hook.sh", script).mode("hook.sh", 0o755);
    b
}

#[test]
fn a_script_without_a_shebang_runs_through_bin_sh() {
    let host = Host::new();
    let out = host.path("out.txt");
    let b = hook_bundle(&host, &format!("echo \"ran as $0\" > {}\n", out.display()));
    let run = host.deploy_dir(&b.dir, &[]);
    run.assert_ok();
    assert_eq!(
        fs::read_to_string(&out).unwrap().trim(),
        format!(
            "ran as {}",
            host.deployments("default-local-deployment-group")[0]
                .join("deployment-archive/hook.sh")
                .display()
        )
    );
}

#[test]
fn the_official_success_line_is_printed() {
    let host = Host::new();
    let b = hook_bundle(&host, "#!/bin/sh\ntrue\n");
    let run = host.deploy_dir(&b.dir, &[]);
    run.assert_ok();
    assert!(
        run.stdout.lines().any(|l| l == SUCCESS_LINE),
        "{}",
        run.stdout
    );
    let failed = host.deploy_dir(&hook_bundle(&host, "#!/bin/sh\nexit 1\n").dir, &[]);
    failed.assert_failed();
    assert!(!failed.stdout.contains(SUCCESS_LINE), "{}", failed.stdout);
}

#[test]
fn yaml_psych_accepts_is_accepted_a_tab_after_a_key_and_a_byte_order_mark() {
    let host = Host::new();
    let dest = host.path("dest");
    let b = Bundle::new(host.path("bundle"));
    b.file("site/index.html", "hello\n");
    b.appspec(&format!(
        "\u{feff}version: 0.0\nos:\tlinux\nfiles:\n  - source:\tsite\n    destination: {}\n",
        dest.display()
    ));
    let run = host.deploy_dir(&b.dir, &[]);
    run.assert_ok();
    assert_eq!(
        fs::read_to_string(dest.join("index.html")).unwrap(),
        "hello\n"
    );
    let v = testbed::run_with_deadline(
        std::process::Command::new(agent_bin())
            .arg("validate")
            .arg(&b.dir),
        Duration::from_secs(60),
    );
    assert!(v.status.success(), "{}{}", v.stdout, v.stderr);
}

#[test]
fn file_exists_behavior_is_read_in_any_case() {
    let host = Host::new();
    let dest = host.path("dest");
    fs::create_dir_all(&dest).unwrap();
    fs::write(dest.join("index.html"), "not ours\n").unwrap();
    let b = Bundle::new(host.path("bundle"));
    b.file("site/index.html", "ours\n");
    b.appspec(&format!(
        "version: 0.0\nos: linux\nfiles:\n  - source: site\n    destination: {}\n",
        dest.display()
    ));
    host.deploy_dir(&b.dir, &["-b", "overwrite"]).assert_ok();
    assert_eq!(
        fs::read_to_string(dest.join("index.html")).unwrap(),
        "ours\n"
    );
}

#[test]
fn a_timeout_ends_when_term_was_enough() {
    // A grace far longer than the test: waiting it out would show.
    let host = Host::with_config(":hook_kill_grace_seconds: 600\n");
    let b = Bundle::new(host.path("bundle"));
    b.appspec("version: 0.0\nos: linux\nhooks:\n  ValidateService:\n    - location: hook.sh\n      timeout: 2\n");
    b.script("hook.sh", "sleep 300 &\nsleep 300");
    let run = host.deploy_dir(&b.dir, &[]);
    run.assert_failed();
    let line = run.event_line("ValidateService");
    assert!(
        line.contains("failed to complete in 2 seconds (SIGTERM was enough"),
        "{line}"
    );
    assert!(!line.contains("SIGKILL"), "{line}");
    assert!(run.elapsed < Duration::from_secs(600), "{:?}", run.elapsed);
}

#[test]
fn an_appspec_named_with_dash_a_must_be_in_the_bundle() {
    let host = Host::new();
    let dest = host.path("dest");
    let b = Bundle::new(host.path("bundle"));
    b.file("site/index.html", "hello\n");
    b.appspec(&format!(
        "version: 0.0\nos: linux\nfiles:\n  - source: site\n    destination: {}\n",
        dest.display()
    ));
    let run = host.deploy_dir(&b.dir, &["-A", "custom.yml"]);
    run.assert_failed();
    assert!(
        run.stderr.contains("Expecting appspec file at location")
            && run.stderr.contains("custom.yml"),
        "{}{}",
        run.stdout,
        run.stderr
    );
    let tgz = b.tgz(&host.path("bundle.tgz"));
    let loc = tgz.display().to_string();
    let run = host.local(&["-l", &loc, "-t", "tgz", "-A", "custom.yml"]);
    run.assert_failed();
    assert!(
        run.stdout.contains("did not find an AppSpec file") && run.stdout.contains("custom.yml"),
        "{}",
        run.stdout
    );
    assert!(!dest.exists(), "nothing was installed");
    // Named and present: used.
    fs::rename(b.dir.join("appspec.yml"), b.dir.join("custom.yml")).unwrap();
    host.deploy_dir(&b.dir, &["-A", "custom.yml"]).assert_ok();
    assert!(dest.join("index.html").exists());
}
