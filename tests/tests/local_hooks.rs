//! Lifecycle hooks run by the real binary: users, timeouts and process
//! groups, background processes, logs and diagnostics, revision selection.

use std::fs;
use std::path::Path;
use std::time::Duration;

use testbed::bundle::Bundle;
use testbed::*;

fn one_hook(host: &Host, event: &str, body: &str, extra: &str) -> Bundle {
    let b = Bundle::new(host.path("bundle"));
    b.appspec(&format!(
        "version: 0.0\nos: linux\nhooks:\n  {event}:\n    - location: hook.sh\n{extra}"
    ))
    .script("hook.sh", body);
    b
}

/// An output file the test user may write, and a bundle whose
/// ApplicationStart script runs `body` (with `{out}` replaced by that file)
/// as the test user.
fn runas_hook(host: &Host, user: &nix::unistd::User, body: &str) -> (std::path::PathBuf, Bundle) {
    let out = host.path("out.txt");
    fs::write(&out, "").unwrap();
    std::os::unix::fs::chown(&out, Some(user.uid.as_raw()), None).unwrap();
    let body = body.replace("{out}", &out.display().to_string());
    let b = one_hook(
        host,
        "ApplicationStart",
        &body,
        &format!("      runas: {TEST_USER}\n"),
    );
    (out, b)
}

fn read_pid(p: &Path) -> i32 {
    let mut pid = 0;
    wait_until(
        Duration::from_secs(10),
        &format!("{} to be written", p.display()),
        || {
            pid = fs::read_to_string(p)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
            pid > 0
        },
    );
    pid
}

#[test]
fn a_script_past_its_timeout_is_killed_with_its_child() {
    let host = Host::new();
    let (main_pid, child_pid) = (host.path("main.pid"), host.path("child.pid"));
    let body = format!(
        "sleep 300 &\necho $! > {}\necho $$ > {}\necho started\nsleep 300",
        child_pid.display(),
        main_pid.display()
    );
    let b = one_hook(&host, "ApplicationStart", &body, "      timeout: 2\n");
    let run = host.deploy_dir(&b.dir, &[]);
    run.assert_failed();
    let line = run.event_line("ApplicationStart");
    assert!(
        line.contains("Script at specified location: hook.sh failed to complete in 2 seconds"),
        "{line}"
    );
    assert!(
        run.stdout.contains("[stdout]started"),
        "the tail is printed: {}",
        run.stdout
    );
    let (m, c) = (read_pid(&main_pid), read_pid(&child_pid));
    wait_until(
        Duration::from_secs(10),
        "the script and its child to be gone",
        || !alive(m) && !alive(c),
    );
    assert!(run.elapsed < Duration::from_secs(30), "{:?}", run.elapsed);
}

#[test]
fn a_script_that_traps_term_is_killed_after_the_grace() {
    let host = Host::new();
    let pid = host.path("pid");
    let body = format!(
        "trap 'echo got TERM' TERM\necho $$ > {}\nwhile true; do sleep 0.2; done",
        pid.display()
    );
    let b = one_hook(&host, "ValidateService", &body, "      timeout: 1\n");
    let run = host.deploy_dir(&b.dir, &[]);
    run.assert_failed();
    let line = run.event_line("ValidateService");
    assert!(
        line.contains("failed to complete in 1 seconds (killed with SIGKILL after SIGTERM"),
        "{line}"
    );
    let p = read_pid(&pid);
    wait_until(
        Duration::from_secs(10),
        "the TERM-trapping script to be gone",
        || !alive(p),
    );
}

#[test]
fn a_background_server_holding_stdout_does_not_hang_the_event() {
    let host = Host::new();
    let (pid, ticks) = (host.path("server.pid"), host.path("ticks"));
    // The server inherits the script's stdout and keeps writing to it.
    let body = format!(
        "(while true; do echo tick; echo tick >> {}; sleep 0.2; done) &\necho $! > {}\necho server started",
        ticks.display(),
        pid.display()
    );
    let b = one_hook(&host, "ApplicationStart", &body, "      timeout: 60\n");
    let run = host.deploy_dir(&b.dir, &[]);
    run.assert_ok();
    assert!(
        run.elapsed < Duration::from_secs(20),
        "the event waited for the background process: {:?}",
        run.elapsed
    );
    assert!(
        run.event_line("ApplicationStart")
            .contains("1 left output open"),
        "{}",
        run.stdout
    );
    let server = read_pid(&pid);
    // The agent has exited; the server must keep running and keep writing
    // (a closed pipe would have killed it with SIGPIPE on its next write).
    let count = |p: &Path| {
        fs::read_to_string(p)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    let now = count(&ticks);
    wait_until(
        Duration::from_secs(15),
        "the server to write 10 more ticks after the agent exited",
        || count(&ticks) >= now + 10,
    );
    assert!(alive(server), "the background server was killed");
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server),
        nix::sys::signal::Signal::SIGKILL,
    );
    let log = fs::read_to_string(
        host.deployments("default-local-deployment-group")[0].join("logs/scripts.log"),
    )
    .unwrap();
    assert!(log.contains("[stdout]server started"), "{log}");
}

#[test]
fn a_failure_reports_the_tail_exit_code_and_duration() {
    let host = Host::new();
    let body = "for i in $(seq 1 300); do echo \"line $i\"; done\necho 'ERROR: database unreachable' >&2\nexit 3";
    let b = one_hook(&host, "ValidateService", body, "");
    let run = host.deploy_dir(&b.dir, &[]);
    run.assert_failed();
    let line = run.event_line("ValidateService");
    // The official agents' message exactly; `local` prints the duration.
    assert!(
        line.contains("s  Script at specified location: hook.sh failed with exit code 3")
            && line.ends_with("exit code 3"),
        "{line}"
    );
    let tail = run
        .stdout
        .split("--- last output of ValidateService ---")
        .nth(1)
        .expect("tail printed");
    assert!(
        tail.contains("[stdout]line 300\n[stderr]ERROR: database unreachable"),
        "{tail}"
    );
    assert!(!tail.contains("[stdout]line 1\n"), "only the tail is kept");
    assert!(
        tail.split("---").next().unwrap().len() <= 2048 + 1,
        "at most 2048 characters"
    );
    assert!(
        run.stdout
            .contains("Your local deployment failed while trying to execute your script at"),
        "{}",
        run.stdout
    );
    // scripts.log has every line, streamed in the official format.
    let log = fs::read_to_string(
        host.deployments("default-local-deployment-group")[0].join("logs/scripts.log"),
    )
    .unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 2 + 300 + 1, "{log}");
    let shape = |l: &str, rest: &str| {
        let (ts, tail) = l.split_at(19);
        ts.len() == 19
            && ts.as_bytes()[4] == b'-'
            && ts.as_bytes()[10] == b' '
            && ts.as_bytes()[13] == b':'
            && tail == format!(" {rest}")
    };
    assert!(
        shape(lines[0], "LifecycleEvent - ValidateService"),
        "{}",
        lines[0]
    );
    assert!(shape(lines[1], "Script - hook.sh"), "{}", lines[1]);
    assert!(shape(lines[2], "[stdout]line 1"), "{}", lines[2]);
    assert!(
        shape(lines[302], "[stderr]ERROR: database unreachable"),
        "{}",
        lines[302]
    );
    // ... and the shared deployments log carries them with the deployment id.
    let dlog = fs::read_to_string(
        host.root()
            .join("deployment-logs/codedeploy-agent-deployments.log"),
    )
    .unwrap();
    assert!(
        dlog.contains("-local][stderr]ERROR: database unreachable"),
        "{dlog}"
    );
}

#[test]
fn scripts_see_the_deployment_environment() {
    let host = Host::new();
    let out = host.path("env.txt");
    let body = format!(
        "echo \"$LIFECYCLE_EVENT|$DEPLOYMENT_ID|$APPLICATION_NAME|$DEPLOYMENT_GROUP_NAME|$DEPLOYMENT_GROUP_ID|${{BUNDLE_BUCKET-unset}}\" > {}",
        out.display()
    );
    let b = one_hook(&host, "AfterInstall", &body, "");
    host.deploy_dir(&b.dir, &["-a", "shop", "-d", "prod-fleet", "-g", "grp-1"])
        .assert_ok();
    let v = fs::read_to_string(&out).unwrap();
    let parts: Vec<&str> = v.trim().split('|').collect();
    assert_eq!(parts[0], "AfterInstall");
    assert!(
        parts[1].starts_with("d-") && parts[1].ends_with("-local") && parts[1].len() == 17,
        "{v}"
    );
    assert_eq!(&parts[2..], &["shop", "prod-fleet", "grp-1", "unset"]);
}

#[test]
fn runas_switches_user_groups_and_environment() {
    require_root();
    let user = require_test_user();
    let host = Host::new();
    let (out, b) = runas_hook(
        &host,
        &user,
        "echo \"$(id -u)|$(id -gn)|$(id -Gn)|$HOME|$USER|$LOGNAME|$SHELL|$LIFECYCLE_EVENT\" > {out}",
    );
    host.deploy_dir(&b.dir, &[]).assert_ok();
    let v = fs::read_to_string(&out).unwrap();
    let p: Vec<&str> = v.trim().split('|').collect();
    assert_eq!(
        p[0],
        user.uid.as_raw().to_string(),
        "runas must not run as root: {v}"
    );
    assert_eq!(p[1], TEST_USER);
    assert!(
        p[2].split(' ').any(|g| g == TEST_EXTRA_GROUP),
        "supplementary groups: {v}"
    );
    assert_eq!(p[3], user.dir.display().to_string());
    assert_eq!((p[4], p[5]), (TEST_USER, TEST_USER));
    assert_eq!(p[6], user.shell.display().to_string());
    assert_eq!(p[7], "ApplicationStart");
}

#[test]
fn runas_login_shell_reads_the_users_profile_when_asked() {
    require_root();
    let user = require_test_user();
    let profile = user.dir.join(".bash_profile");
    fs::create_dir_all(&user.dir).unwrap();
    fs::write(&profile, "export FROM_PROFILE=yes\n").unwrap();
    for (config, expected) in [("", "unset"), (":runas_login_shell: true\n", "yes")] {
        let host = Host::with_config(config);
        let (out, b) = runas_hook(
            &host,
            &user,
            "echo \"${FROM_PROFILE-unset}|$DEPLOYMENT_GROUP_ID\" > {out}",
        );
        host.deploy_dir(&b.dir, &[]).assert_ok();
        assert_eq!(
            fs::read_to_string(&out).unwrap().trim(),
            format!("{expected}|default-local-deployment-group"),
            "config {config:?}"
        );
    }
    fs::remove_file(profile).unwrap();
}

#[test]
fn application_stop_runs_from_the_last_successful_revision() {
    let host = Host::new();
    let record = host.path("record");
    let make = |v: &str| {
        let b = Bundle::new(host.path(v));
        b.appspec("version: 0.0\nos: linux\nhooks:\n  ApplicationStop:\n    - location: stop.sh\n  BeforeInstall:\n    - location: stop.sh\n")
            .script("stop.sh", &format!("echo \"$LIFECYCLE_EVENT {v}\" >> {}", record.display()));
        b
    };
    let (v1, v2) = (make("v1"), make("v2"));
    let run = host.deploy_dir(&v1.dir, &[]);
    run.assert_ok();
    assert!(
        run.event_line("ApplicationStop")
            .contains("no previous successful deployment"),
        "{}",
        run.stdout
    );
    host.deploy_dir(&v2.dir, &[]).assert_ok();
    assert_eq!(
        fs::read_to_string(&record).unwrap(),
        "BeforeInstall v1\nApplicationStop v1\nBeforeInstall v2\n"
    );
}

#[test]
fn missing_and_non_executable_scripts() {
    let host = Host::new();
    let b = Bundle::new(host.path("bundle"));
    b.appspec("version: 0.0\nos: linux\nhooks:\n  AfterInstall:\n    - location: scripts/plain.sh\n    - location: scripts/absent.sh\n")
        .file("scripts/plain.sh", "#!/bin/sh\necho ran\n")
        .mode("scripts/plain.sh", 0o644);
    let run = host.deploy_dir(&b.dir, &[]);
    run.assert_failed();
    let line = run.event_line("AfterInstall");
    assert!(
        line.contains("Script does not exist at specified location: ")
            && line.contains("scripts/absent.sh"),
        "{line}"
    );
    assert!(
        run.stdout.contains("[stdout]ran"),
        "the non-executable script was made executable and ran: {}",
        run.stdout
    );
}

#[test]
fn a_chatty_script_s_log_is_rotated_within_its_bound() {
    // 2,000 lines of 100 bytes against a 16 KiB bound, 3 rotated files kept:
    // the disk holds at most 4 x 16 KiB of it, the newest lines last.
    let host = Host::with_config(":log_max_bytes: 16384\n:log_keep: 3\n");
    let body = "i=0\nwhile [ $i -lt 2000 ]; do printf 'line %04d %s\\n' $i $(printf '%080d' 0); i=$((i+1)); done\n";
    let b = one_hook(&host, "ApplicationStart", body, "");
    host.deploy_dir(&b.dir, &[]).assert_ok();
    let logs = host.deployments("default-local-deployment-group")[0].join("logs");
    let size = |n: &str| fs::metadata(logs.join(n)).map(|m| m.len()).ok();
    for n in [
        "scripts.log",
        "scripts.log.1",
        "scripts.log.2",
        "scripts.log.3",
    ] {
        let s = size(n).unwrap_or_else(|| panic!("{n} missing"));
        assert!(s <= 16384, "{n}: {s} bytes");
    }
    assert_eq!(size("scripts.log.4"), None, "keep: 3");
    let last = fs::read_to_string(logs.join("scripts.log")).unwrap();
    assert!(
        last.contains("line 1999"),
        "the newest lines are in scripts.log"
    );
}
