//! The daemon under failure: killed or stopped during a hook, a control
//! plane that errors, throttles and drops connections, an S3 that cuts
//! downloads, a bundle that changed, a restart deployment reusing a bundle.

use std::fs;
use std::time::Duration;

use nix::sys::signal::Signal;
use testbed::bed::{Agent, Testbed};
use testbed::bundle::Bundle;
use testbed::control::FaultKind;
use testbed::scenario::*;
use testbed::wait_until;

/// A revision whose BeforeInstall blocks until `release` appears in the
/// agent's working directory, after announcing itself in `started`.
fn blocking_bundle(bed: &Testbed, name: &str) -> String {
    let b = Bundle::new(bed.path(name));
    b.file("site/index.html", "<h1>blocking</h1>\n");
    b.script(
        "hooks/record.sh",
        "#!/bin/sh\necho \"$LIFECYCLE_EVENT $DEPLOYMENT_ID\" >> hooks.log\n",
    );
    b.script(
        "hooks/block.sh",
        "#!/bin/sh\necho \"$LIFECYCLE_EVENT start $DEPLOYMENT_ID\" >> hooks.log\ntouch started\nwhile [ ! -e release ]; do sleep 0.05; done\necho \"$LIFECYCLE_EVENT end $DEPLOYMENT_ID\" >> hooks.log\n",
    );
    b.appspec("version: 0.0\nos: linux\nfiles:\n  - source: site\n    destination: www\nhooks:\n  BeforeInstall:\n    - location: hooks/block.sh\n      timeout: 120\n  AfterInstall:\n    - location: hooks/record.sh\n");
    let zip = b.zip(&bed.path(&format!("{name}.zip")));
    bed.upload("e2e-block", &format!("shop/{name}.zip"), &zip);
    create_s3_deployment(
        bed,
        &format!("bucket=e2e-block,key=shop/{name}.zip,bundleType=zip"),
    )
}

fn wait_started(a: &Agent) {
    wait_until(LIMIT, "the blocking hook started", || {
        a.dir.join("started").exists()
    });
}

#[test]
fn sigkill_during_a_hook_reports_the_command_failed_after_restart() {
    testbed::require_root();
    let bed = Testbed::new();
    let mut agents = fleet(&bed, 1);
    setup_group(&bed, "CodeDeployDefault.OneAtATime");
    let d = blocking_bundle(&bed, "blocked");
    wait_started(&agents[0]);
    agents[0].signal(Signal::SIGKILL);
    agents[0].wait_exit(LIMIT);
    // The orphaned script (own process group) may finish; it reports to no one.
    fs::write(agents[0].dir.join("release"), "").unwrap();
    agents[0].start();
    assert_eq!(
        bed.wait_deployment(&d, LIMIT),
        "Failed",
        "{}",
        logs(&agents)
    );
    let s = instance_summary(&bed, &d, &agents[0].imds.instance_id);
    let bi = event(&s, "BeforeInstall");
    assert_eq!(bi["status"], "Failed", "{s:#}");
    assert!(message(bi).contains("after an agent restart"), "{bi:#}");
    assert_eq!(event(&s, "AfterInstall")["status"], "Skipped");
    // The record goes once the service has taken the report.
    let ongoing = agents[0].root().join("ongoing-deployment");
    wait_until(LIMIT, "the tracking record is cleared", || {
        fs::read_dir(&ongoing)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false)
    });

    // The host is usable again.
    let d2 = deploy_version(&bed, "e2e-block", "after-kill", "zip", 0);
    assert_eq!(
        bed.wait_deployment(&d2, LIMIT),
        "Succeeded",
        "{}",
        logs(&agents)
    );
    assert_eq!(
        fs::read_to_string(agents[0].dir.join("www/index.html")).unwrap(),
        "<h1>after-kill</h1>\n"
    );
}

#[test]
fn sigterm_during_a_hook_lets_it_finish_reports_it_and_exits_zero() {
    testbed::require_root();
    let bed = Testbed::new();
    let mut agents = fleet(&bed, 1);
    setup_group(&bed, "CodeDeployDefault.OneAtATime");
    let d = blocking_bundle(&bed, "terminated");
    wait_started(&agents[0]);
    // While the hook runs, the service offers the same command again (an
    // acknowledgement would say InProgress): it must not start twice.
    bed.control
        .inject(Some("PollHostCommand"), FaultKind::ReofferLast, 2);
    wait_until(LIMIT, "the running command was offered again", || {
        bed.control.faults_pending() == 0
    });
    agents[0].signal(Signal::SIGTERM);
    wait_until(
        LIMIT,
        "the agent says it waits for the running command",
        || {
            agents[0]
                .log()
                .contains("waiting for running commands to finish")
        },
    );
    assert!(
        testbed::alive(agents[0].pid().unwrap()),
        "the agent quit while its hook ran"
    );
    fs::write(agents[0].dir.join("release"), "").unwrap();
    let st = agents[0].wait_exit(LIMIT);
    assert_eq!(st.code(), Some(0), "{}", agents[0].log_tail());
    let s = instance_summary(&bed, &d, &agents[0].imds.instance_id);
    assert_eq!(event(&s, "BeforeInstall")["status"], "Succeeded", "{s:#}");
    assert_eq!(
        event(&s, "Install")["status"],
        "InProgress",
        "nothing may run after the stop: {s:#}"
    );
    assert!(
        !agents[0].dir.join("www").exists(),
        "Install ran after the stop"
    );
    let lines = hook_lines(&agents[0]);
    assert_eq!(
        lines,
        vec![
            format!("BeforeInstall start {d}"),
            format!("BeforeInstall end {d}")
        ]
    );

    // Started again, the agent carries the deployment on to the end.
    agents[0].start();
    assert_eq!(
        bed.wait_deployment(&d, LIMIT),
        "Succeeded",
        "{}",
        logs(&agents)
    );
    assert_eq!(
        hook_lines(&agents[0]).last().unwrap(),
        &format!("AfterInstall {d}")
    );
}

#[test]
fn control_plane_errors_throttling_and_dropped_connections() {
    testbed::require_root();
    let bed = Testbed::new();
    let agents = fleet(&bed, 3);
    setup_group(&bed, "CodeDeployDefault.OneAtATime");
    let c = &bed.control;
    c.inject(Some("PollHostCommand"), FaultKind::ServerError, 4);
    c.inject(Some("PollHostCommand"), FaultKind::Throttle, 3);
    c.inject(Some("PollHostCommand"), FaultKind::DropAfter, 1);
    c.inject(
        Some("PollHostCommand"),
        FaultKind::Delay(Duration::from_secs(3)),
        2,
    );
    c.inject(Some("GetDeploymentSpecification"), FaultKind::DropBefore, 2);
    c.inject(
        Some("GetDeploymentSpecification"),
        FaultKind::ServerError,
        2,
    );
    c.inject(
        Some("PutHostCommandAcknowledgement"),
        FaultKind::Throttle,
        3,
    );
    c.inject(
        Some("PutHostCommandAcknowledgement"),
        FaultKind::DropAfter,
        2,
    );
    c.inject(Some("PutHostCommandComplete"), FaultKind::DropAfter, 3);
    c.inject(Some("PutHostCommandComplete"), FaultKind::ServerError, 2);
    c.inject(Some("PutHostCommandComplete"), FaultKind::DropBefore, 2);
    c.inject(Some("PollHostCommand"), FaultKind::ReofferLast, 4);
    let d = deploy_version(&bed, "e2e-faults", "v1", "zip", 0);
    assert_eq!(
        bed.wait_deployment(&d, LIMIT),
        "Succeeded",
        "{}",
        logs(&agents)
    );
    assert_eq!(
        c.faults_pending(),
        0,
        "every injected fault must have been met"
    );
    for a in &agents {
        assert!(
            testbed::alive(a.pid().unwrap()),
            "an agent died:\n{}",
            a.log_tail()
        );
        let expected: Vec<String> = ["BeforeInstall", "AfterInstall", "ApplicationStart"]
            .iter()
            .map(|e| format!("{e} {d} e2e-faults"))
            .chain([format!("ValidateService {d}")])
            .collect();
        assert_eq!(hook_lines(a), expected, "a script ran twice or not at all");
    }
    // Backoff: after a failed poll, the same host waits before polling again.
    let calls = c.calls();
    for (i, call) in calls.iter().enumerate() {
        if call.operation == "PollHostCommand"
            && matches!(
                call.fault,
                Some(FaultKind::ServerError | FaultKind::Throttle)
            )
        {
            if let Some(next) = calls[i + 1..]
                .iter()
                .find(|n| n.principal == call.principal && n.operation == "PollHostCommand")
            {
                assert!(
                    next.at - call.at >= 0.45,
                    "polled again {:.3}s after an error",
                    next.at - call.at
                );
            }
        }
    }
    // Each command was acknowledged once it was taken, and run once: the
    // retried completions after lost answers are the only repeats.
    for cmd in c.commands_of(&d) {
        assert!(cmd.completions >= 1, "{cmd:?}");
    }
    // A completion whose answer was lost was applied; the agent, not
    // knowing, sends it again (after its backoff, possibly after the
    // deployment already moved on and finished).
    wait_until(
        LIMIT,
        "a completion whose answer was lost is sent again",
        || c.commands_of(&d).iter().any(|cmd| cmd.completions > 1),
    );
}

#[test]
fn s3_downloads_resume_after_cut_connections_and_check_the_etag() {
    testbed::require_root();
    let bed = Testbed::new();
    let agents = fleet(&bed, 1);
    setup_group(&bed, "CodeDeployDefault.OneAtATime");
    // 20 MiB that gzip cannot shrink: three ranged parts of 8 MiB.
    let b = recording_bundle(&bed.path("big"), "big", 0);
    let mut data = vec![0u8; 20 << 20];
    openssl::rand::rand_bytes(&mut data).unwrap();
    fs::write(bed.path("big/site/blob.bin"), &data).unwrap();
    let tgz = b.tgz(&bed.path("big.tgz"));
    let (_, etag) = bed.upload("e2e-big", "shop/big.tgz", &tgz);
    bed.s3.cut_responses(3, 1_000_000);
    bed.s3.unavailable(1);
    let d = create_s3_deployment(
        &bed,
        &format!("bucket=e2e-big,key=shop/big.tgz,bundleType=tgz,eTag={etag}"),
    );
    assert_eq!(
        bed.wait_deployment(&d, LIMIT),
        "Succeeded",
        "{}",
        logs(&agents)
    );
    assert!(
        bed.s3.fired() >= 2,
        "the faults did not fire ({})",
        bed.s3.fired()
    );
    assert_eq!(fs::read(agents[0].dir.join("www/blob.bin")).unwrap(), data);
    let log = agents[0].log();
    assert!(
        log.contains("S3 part interrupted, resuming"),
        "{}",
        agents[0].log_tail()
    );
    assert!(log.contains("parts=3"), "{}", agents[0].log_tail());

    // A deployment that names another ETag than the object has fails in
    // DownloadBundle, saying why.
    let d2 = create_s3_deployment(
        &bed,
        "bucket=e2e-big,key=shop/big.tgz,bundleType=tgz,eTag=0123456789abcdef0123456789abcdef",
    );
    assert_eq!(bed.wait_deployment(&d2, LIMIT), "Failed");
    let s = instance_summary(&bed, &d2, &agents[0].imds.instance_id);
    let msg = message(event(&s, "DownloadBundle"));
    assert!(
        msg.contains(&format!("the object's ETag is {etag}")),
        "{msg}"
    );
}

/// A tar of `mib` MiB of random data, uploaded as `version`: (the data,
/// the deployment's location, the ETag).
fn random_tar(bed: &Testbed, version: &str, mib: usize) -> (Vec<u8>, String, String) {
    let b = recording_bundle(&bed.path(version), version, 0);
    let mut data = vec![0u8; mib << 20];
    openssl::rand::rand_bytes(&mut data).unwrap();
    fs::write(bed.path(&format!("{version}/site/blob.bin")), &data).unwrap();
    let tar = b.tar(&bed.path(&format!("{version}.tar")));
    let key = format!("shop/{version}.tar");
    let (_, etag) = bed.upload("e2e-spoil", &key, &tar);
    let location = format!("bucket=e2e-spoil,key={key},bundleType=tar,eTag={etag}");
    (data, location, etag)
}

/// Deploy `location` with the next `times` S3 responses spoiled 2 MiB in;
/// the deployment ends as `expect`.
fn deploy_spoiling(
    bed: &Testbed,
    agents: &[Agent],
    location: &str,
    times: u32,
    expect: &str,
) -> String {
    let before = bed.s3.fired();
    bed.s3.corrupt_responses(times, 2 << 20);
    let d = create_s3_deployment(bed, location);
    assert_eq!(bed.wait_deployment(&d, LIMIT), expect, "{}", logs(agents));
    assert_eq!(
        bed.s3.fired() - before,
        times,
        "the corruptions did not fire"
    );
    d
}

/// A tar unpacks while its parts arrive; a response spoiled in transit
/// that fails its checksum (S3 sent one) is fetched again, and the bundle
/// unpacked afresh once whole. Two responses are spoiled: the early fetch
/// for the `loadBalancer` section's, then DownloadBundle's.
#[test]
fn a_bundle_spoiled_in_transit_is_fetched_again_when_its_checksum_fails() {
    testbed::require_root();
    let bed = Testbed::new();
    let agents = fleet(&bed, 1);
    setup_group(&bed, "CodeDeployDefault.OneAtATime");
    // One part of 4 MiB, whose response carries a checksum.
    let (data, location, _) = random_tar(&bed, "v1", 4);
    deploy_spoiling(&bed, &agents, &location, 2, "Succeeded");
    assert_eq!(fs::read(agents[0].dir.join("www/blob.bin")).unwrap(), data);
    let log = agents[0].log();
    assert!(
        log.contains("checksum mismatch"),
        "{}",
        agents[0].log_tail()
    );
    assert!(
        log.contains("unpacked again once whole"),
        "{}",
        agents[0].log_tail()
    );
}

/// Bytes spoiled in a ranged part, whose response carries no checksum, are
/// caught by the MD5 of the ETag even though the unpack read them as they
/// came: the command fails, nothing of the spoiled revision is installed or
/// run, and no partial bundle is kept for a restart to reuse. (On-premises,
/// so no early fetch for a `loadBalancer` section takes the spoiled part.)
#[test]
fn a_bundle_spoiled_in_transit_fails_the_etag_check_while_it_unpacks() {
    testbed::require_root();
    let bed = Testbed::new();
    let agents = on_premises_fleet(&bed, 1);
    setup_on_premises_group(&bed, "CodeDeployDefault.OneAtATime");
    // 20 MiB in three ranged parts, the agent's first S3 download: every
    // connection is new, so the spoiling proxy sees each one.
    let (_, location, etag) = random_tar(&bed, "v2", 20);
    let d2 = deploy_spoiling(&bed, &agents, &location, 1, "Failed");
    let s = instance_summary(&bed, &d2, &agents[0].imds.instance_id);
    let msg = message(event(&s, "DownloadBundle"));
    assert!(msg.contains("MD5") && msg.contains(&etag), "{msg}");
    assert!(
        !agents[0].dir.join("www").exists(),
        "a spoiled file was installed"
    );
    assert!(hook_lines(&agents[0]).is_empty(), "a hook ran");
    let group = bed
        .control
        .with_state(|s| s.groups.values().next().unwrap().id.clone());
    let dir = agents[0].root().join(group).join(&d2);
    assert!(
        !dir.join("bundle.tar").exists(),
        "a spoiled bundle was kept"
    );
    assert!(!dir.join("deployment-archive").exists());
}

#[test]
fn restart_deployments_reuse_an_intact_bundle_and_download_otherwise() {
    testbed::require_root();
    let bed = Testbed::new();
    let agents = fleet(&bed, 1);
    setup_group(&bed, "CodeDeployDefault.OneAtATime");
    let d1 = deploy_version(&bed, "e2e-reuse", "v1", "zip", 0);
    assert_eq!(
        bed.wait_deployment(&d1, LIMIT),
        "Succeeded",
        "{}",
        logs(&agents)
    );
    // The object is gone from S3: only reuse can deploy it again.
    bed.aws_ok(&[
        "s3api",
        "delete-object",
        "--bucket",
        "e2e-reuse",
        "--key",
        "shop/v1.zip",
    ]);
    bed.control.set_reuse_archive_from(Some(&d1));
    let d2 = create_s3_deployment(&bed, "bucket=e2e-reuse,key=shop/v1.zip,bundleType=zip");
    assert_eq!(
        bed.wait_deployment(&d2, LIMIT),
        "Succeeded",
        "{}",
        logs(&agents)
    );
    assert!(
        agents[0]
            .log()
            .contains(&format!("reused the bundle of {d1}")),
        "{}",
        agents[0].log_tail()
    );
    assert_eq!(
        hook_lines(&agents[0]).last().unwrap(),
        &format!("ValidateService {d2}")
    );
    let s = instance_summary(&bed, &d2, &agents[0].imds.instance_id);
    assert_eq!(
        message(event(&s, "DownloadBundle")),
        "Succeeded: BundleSource=archive-reuse"
    );

    // Naming a deployment whose bundle is not on this host means downloading
    // (which fails here, the object being gone), never failing on the reuse.
    bed.control.set_reuse_archive_from(Some("d-NOTHERE00"));
    let d3 = create_s3_deployment(&bed, "bucket=e2e-reuse,key=shop/v1.zip,bundleType=zip");
    assert_eq!(bed.wait_deployment(&d3, LIMIT), "Failed");
    let s = instance_summary(&bed, &d3, &agents[0].imds.instance_id);
    let msg = message(event(&s, "DownloadBundle"));
    assert!(
        msg.contains("s3://e2e-reuse/shop/v1.zip") && msg.contains("HeadObject"),
        "{msg}"
    );
}

#[test]
fn start_status_stop_like_the_official_service_commands() {
    testbed::require_root();
    let bed = Testbed::new();
    let a = bed.instance("i-0service0", &[("role", "web")]);
    let run = |cmd: &str| {
        std::process::Command::new(testbed::agent_bin())
            .arg("--config_file")
            .arg(&a.config)
            .arg(cmd)
            .current_dir(&a.dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .output()
            .unwrap()
    };
    let out = run("status");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "No AWS CodeDeploy agent running\n"
    );
    let out = run("start");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pid: i32 = fs::read_to_string(a.dir.join("pid/codedeploy-agent.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(testbed::alive(pid));
    let out = run("status");
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(&format!(
            "The AWS CodeDeploy agent is running as PID {pid}\n"
        )),
        "{text}"
    );
    wait_until(LIMIT, "status shows a poll", || {
        let text = String::from_utf8_lossy(&run("status").stdout).into_owned();
        text.contains("last successful poll: ") && !text.contains("none yet")
    });
    // A second start does not start a second agent.
    let out = run("start");
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("already running as PID {pid}")));
    let out = run("stop");
    assert!(out.status.success());
    assert!(!testbed::alive(pid));
    assert!(
        !a.dir.join("pid/codedeploy-agent.pid").exists(),
        "the pid file outlived the agent"
    );
    assert_eq!(run("status").status.code(), Some(1));
}

#[test]
fn tells_systemd_when_ready_and_when_stopping() {
    use std::os::unix::net::UnixDatagram;
    testbed::require_root();
    let bed = Testbed::new();
    let sock_path = bed.path("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(LIMIT)).unwrap();
    let mut a = bed.instance("i-0notify01", &[("role", "web")]);
    // The first polls fail: READY=1 must wait for one the service answers.
    bed.control
        .inject(Some("PollHostCommand"), FaultKind::ServerError, 2);
    a.start_with_env(&[
        ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
        ("WATCHDOG_USEC", "400000"),
    ]);
    let mut buf = [0u8; 256];
    let mut recv = || {
        let n = sock
            .recv(&mut buf)
            .expect("a notification within the limit");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    // Watchdog pings may come first; READY=1 comes after a poll succeeded.
    let first = std::iter::repeat_with(&mut recv)
        .find(|m| m != "WATCHDOG=1")
        .unwrap();
    assert_eq!(first, "READY=1");
    let polls: Vec<_> = bed
        .control
        .calls()
        .into_iter()
        .filter(|c| c.operation == "PollHostCommand")
        .collect();
    assert!(
        polls.iter().filter(|c| c.status >= 500).count() == 2
            && polls.iter().any(|c| c.status == 200),
        "READY only after failed polls and an answered one: {polls:?}"
    );
    assert!(
        a.log().contains("not ready until a poll is answered"),
        "{}",
        a.log_tail()
    );
    // The watchdog keeps being fed while the loop turns.
    let pings = std::iter::repeat_with(&mut recv)
        .take(3)
        .filter(|m| m == "WATCHDOG=1")
        .count();
    assert_eq!(pings, 3);
    a.signal(Signal::SIGTERM);
    let stopping = std::iter::repeat_with(&mut recv).find(|m| m != "WATCHDOG=1");
    assert_eq!(stopping.as_deref(), Some("STOPPING=1"));
    assert_eq!(a.wait_exit(LIMIT).code(), Some(0));
}

#[test]
fn status_names_the_command_in_progress() {
    testbed::require_root();
    let bed = Testbed::new();
    let agents = fleet(&bed, 1);
    setup_group(&bed, "CodeDeployDefault.OneAtATime");
    let d = blocking_bundle(&bed, "status");
    wait_started(&agents[0]);
    let status = || {
        let out = std::process::Command::new(testbed::agent_bin())
            .arg("--config_file")
            .arg(&agents[0].config)
            .arg("status")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = status();
    assert!(
        text.contains(&format!("in progress: deployment {d} event BeforeInstall")),
        "{text}"
    );
    assert!(text.contains("last successful poll: "), "{text}");
    fs::write(agents[0].dir.join("release"), "").unwrap();
    assert_eq!(bed.wait_deployment(&d, LIMIT), "Succeeded");
    wait_until(LIMIT, "status idle again", || {
        status().contains("no command in progress")
    });
}

#[test]
fn an_application_a_hook_started_outlives_an_agent_restart() {
    // What the unit's KillMode=process allows: stopping the agent (SIGTERM
    // to it alone, as systemd does) leaves a daemonised application alone.
    testbed::require_root();
    let bed = Testbed::new();
    let mut agents = fleet(&bed, 1);
    setup_group(&bed, "CodeDeployDefault.OneAtATime");
    let b = Bundle::new(bed.path("daemon-app"));
    b.script(
        "hooks/start.sh",
        "#!/bin/sh\nsetsid sleep 3600 >/dev/null 2>&1 </dev/null &\necho $! > app.pid\n",
    );
    b.appspec(
        "version: 0.0\nos: linux\nhooks:\n  ApplicationStart:\n    - location: hooks/start.sh\n",
    );
    let zip = b.zip(&bed.path("daemon-app.zip"));
    bed.upload("e2e-daemon-app", "shop/app.zip", &zip);
    let d = create_s3_deployment(
        &bed,
        "bucket=e2e-daemon-app,key=shop/app.zip,bundleType=zip",
    );
    assert_eq!(
        bed.wait_deployment(&d, LIMIT),
        "Succeeded",
        "{}",
        logs(&agents)
    );
    let pid: i32 = fs::read_to_string(agents[0].dir.join("app.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(testbed::alive(pid));
    agents[0].signal(Signal::SIGTERM);
    assert_eq!(agents[0].wait_exit(LIMIT).code(), Some(0));
    assert!(
        testbed::alive(pid),
        "stopping the agent stopped the application"
    );
    agents[0].start();
    let polls = || {
        bed.control
            .calls()
            .iter()
            .filter(|c| c.operation == "PollHostCommand" && c.status == 200)
            .count()
    };
    let before = polls();
    wait_until(LIMIT, "the restarted agent polls", || polls() > before);
    assert!(
        testbed::alive(pid),
        "starting the agent stopped the application"
    );
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
}
