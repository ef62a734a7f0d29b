//! `codedeploy-agent local` end to end: the real binary deploys bundles the
//! tests build, on a throwaway deployment root, into temporary destinations.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use testbed::bundle::{single_mapping, Bundle};
use testbed::*;

/// A script that appends "<event> <script> <user>" to `record`.
fn recorder(record: &Path) -> String {
    format!(
        "echo \"$LIFECYCLE_EVENT $(basename $0) $(id -un)\" >> {}",
        record.display()
    )
}

#[test]
fn seed_appspec_1_deploys() {
    let host = Host::new();
    let dest = host.path("var/www/html");
    let record = host.path("record");
    let b = Bundle::new(host.path("bundle"));
    b.appspec(&format!(
        "version: 0.0
os: linux
files:
  - source: /html
    destination: {}
hooks:
  BeforeInstall:
    - location: scripts/deregister_from_elb.sh
      timeout: 400
    - location: scripts/stop_server.sh
      timeout: 120
      runas: root
  ApplicationStart:
    - location: scripts/start_server.sh
      timeout: 120
      runas: root
    - location: scripts/register_with_elb.sh
      timeout: 120
",
        dest.display()
    ));
    b.file("html/index.html", "<h1>v1</h1>")
        .file("html/css/site.css", "body{}");
    for s in [
        "deregister_from_elb",
        "stop_server",
        "start_server",
        "register_with_elb",
    ] {
        b.script(&format!("scripts/{s}.sh"), &recorder(&record));
    }
    let run = host.deploy_dir(&b.dir, &[]);
    run.assert_ok();
    assert!(run
        .stdout
        .contains("Successfully deployed your bundle locally"));
    assert_eq!(
        fs::read_to_string(dest.join("index.html")).unwrap(),
        "<h1>v1</h1>"
    );
    assert_eq!(
        fs::read_to_string(dest.join("css/site.css")).unwrap(),
        "body{}"
    );
    assert!(!dest.join("scripts").exists(), "only /html is installed");
    assert_eq!(
        fs::read_to_string(&record).unwrap(),
        "BeforeInstall deregister_from_elb.sh root\nBeforeInstall stop_server.sh root\nApplicationStart start_server.sh root\nApplicationStart register_with_elb.sh root\n"
    );
    assert!(run.event_line("Install").contains(" ok "), "{}", run.stdout);
}

#[test]
fn seed_appspec_2_deploys_with_runas_user() {
    require_root();
    let user = require_test_user();
    let host = Host::new();
    let dest = host.path("install/location");
    let record = host.path("record");
    fs::write(&record, "").unwrap();
    std::os::unix::fs::chown(&record, Some(user.uid.as_raw()), None).unwrap();
    let b = Bundle::new(host.path("bundle"));
    b.appspec(&format!(
        "version: 0.0
os: linux
files:
  - source: /
    destination: {}
hooks:
  AfterInstall:
    - location: deployment/stop.sh
      runas: {TEST_USER}
  ApplicationStart:
    - location: deployment/start.sh
      runas: {TEST_USER}
  ValidateService:
    - location: deployment/validate.sh
      runas: {TEST_USER}
",
        dest.display()
    ));
    for s in ["stop", "start", "validate"] {
        b.script(&format!("deployment/{s}.sh"), &recorder(&record));
    }
    b.file("app/server.js", "console.log(1)");
    host.deploy_dir(&b.dir, &[]).assert_ok();
    assert_eq!(
        fs::read_to_string(&record).unwrap(),
        format!("AfterInstall stop.sh {TEST_USER}\nApplicationStart start.sh {TEST_USER}\nValidateService validate.sh {TEST_USER}\n")
    );
    assert!(dest.join("app/server.js").is_file());
    assert!(dest.join("appspec.yml").is_file());
}

#[test]
fn second_deployment_removes_the_first_ones_files() {
    let host = Host::new();
    let dest = host.path("srv/app");
    let spec = single_mapping("/site", &dest);
    let v1 = Bundle::new(host.path("v1"));
    v1.appspec(&spec)
        .file("site/a.txt", "a1")
        .file("site/old.txt", "old")
        .file("site/gone/x.txt", "x")
        .symlink("site/link", "a.txt");
    host.deploy_dir(&v1.dir, &[]).assert_ok();
    assert_eq!(
        fs::read_link(dest.join("link")).unwrap(),
        Path::new("a.txt")
    );
    // An operator adds a file next to the deployed ones.
    fs::write(dest.join("uploaded.png"), "user data").unwrap();

    let v2 = Bundle::new(host.path("v2"));
    v2.appspec(&spec)
        .file("site/a.txt", "a2")
        .file("site/new.txt", "new");
    host.deploy_dir(&v2.dir, &[]).assert_ok();
    assert_eq!(fs::read_to_string(dest.join("a.txt")).unwrap(), "a2");
    assert!(dest.join("new.txt").is_file());
    assert!(
        !dest.join("old.txt").exists()
            && !dest.join("gone").exists()
            && fs::symlink_metadata(dest.join("link")).is_err()
    );
    assert_eq!(
        fs::read_to_string(dest.join("uploaded.png")).unwrap(),
        "user data"
    );

    // The cleanup file lists exactly what v2 created, in the official format.
    let cleanup =
        fs::read_to_string(host.instructions("default-local-deployment-group-cleanup")).unwrap();
    let mut lines: Vec<&str> = cleanup.lines().collect();
    lines.sort();
    let a = dest.join("a.txt").display().to_string();
    let n = dest.join("new.txt").display().to_string();
    assert_eq!(lines, vec![a.as_str(), n.as_str()], "{cleanup}");
    assert!(cleanup.ends_with('\n'));
    assert!(
        !host
            .instructions("default-local-deployment-group-cleanup.previous")
            .exists(),
        "the previous cleanup file went with the install"
    );
    // The pointer files name the deployment directory, without a newline.
    let last = fs::read_to_string(
        host.instructions("default-local-deployment-group_last_successful_install"),
    )
    .unwrap();
    assert_eq!(
        Path::new(&last),
        host.deployments("default-local-deployment-group")
            .last()
            .unwrap()
    );
    let json: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(host.instructions("default-local-deployment-group-install.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(json["instructions"].as_array().unwrap().len(), 2);
    assert_eq!(json["instructions"][0]["type"], "copy");
}

fn conflict_setup(host: &Host, appspec_extra: &str) -> (Bundle, std::path::PathBuf) {
    let dest = host.path("srv/site");
    fs::create_dir_all(&dest).unwrap();
    fs::write(dest.join("index.html"), "hand-made").unwrap();
    let b = Bundle::new(host.path("bundle"));
    b.appspec(&format!(
        "version: 0.0\nos: linux\n{appspec_extra}files:\n  - source: /www\n    destination: {}\n",
        dest.display()
    ))
    .file("www/index.html", "from revision")
    .file("www/other.html", "other");
    (b, dest)
}

#[test]
fn disallow_fails_and_leaves_the_host_as_it_was() {
    let host = Host::new();
    let (b, dest) = conflict_setup(&host, "");
    let before = snapshot(&dest);
    let run = host.deploy_dir(&b.dir, &[]);
    run.assert_failed();
    let line = run.event_line("Install");
    assert!(line.contains("FAILED"), "{line}");
    assert!(
        line.contains(&format!(
            "a specified file already exists at this location: {}",
            dest.join("index.html").display()
        )),
        "{line}"
    );
    assert!(line.contains("appspec.yml:4:5: files[0]"), "{line}");
    assert_eq!(snapshot(&dest), before);
    assert!(!host
        .instructions("default-local-deployment-group-cleanup")
        .exists());
}

#[test]
fn overwrite_replaces_and_records_the_file() {
    let host = Host::new();
    let (b, dest) = conflict_setup(&host, "");
    host.deploy_dir(&b.dir, &["-b", "OVERWRITE"]).assert_ok();
    assert_eq!(
        fs::read_to_string(dest.join("index.html")).unwrap(),
        "from revision"
    );
    assert!(!dest.join(".index.html.codedeploy-new").exists());
    let cleanup =
        fs::read_to_string(host.instructions("default-local-deployment-group-cleanup")).unwrap();
    assert!(
        cleanup
            .lines()
            .any(|l| Path::new(l) == dest.join("index.html")),
        "{cleanup}"
    );
}

#[test]
fn retain_in_the_appspec_wins_over_the_deployment_setting() {
    let host = Host::new();
    let (b, dest) = conflict_setup(&host, "file_exists_behavior: RETAIN\n");
    let run = host.deploy_dir(&b.dir, &["-b", "OVERWRITE"]);
    run.assert_ok();
    assert_eq!(
        fs::read_to_string(dest.join("index.html")).unwrap(),
        "hand-made"
    );
    assert_eq!(
        fs::read_to_string(dest.join("other.html")).unwrap(),
        "other"
    );
    assert!(
        run.event_line("Install").contains("1 kept (RETAIN)"),
        "{}",
        run.stdout
    );
    let cleanup =
        fs::read_to_string(host.instructions("default-local-deployment-group-cleanup")).unwrap();
    assert!(
        !cleanup.contains("index.html"),
        "a retained file is not ours: {cleanup}"
    );
}

#[test]
fn a_cleanup_file_written_by_the_official_agent_is_honoured() {
    // A host that switches agents: the official agent left its cleanup file.
    let host = Host::new();
    let dest = host.path("srv/app");
    fs::create_dir_all(dest.join("lib")).unwrap();
    for f in ["old.js", "lib/util.js", "lib/keep-me.js"] {
        fs::write(dest.join(f), "old").unwrap();
    }
    let instr = host.root().join("deployment-instructions");
    fs::create_dir_all(&instr).unwrap();
    // Official format: one path per line in creation order, `semanage\0`
    // lines for SELinux rules, and a last line cut short by a crash.
    let text = format!(
        "{d}\n{d}/old.js\n{d}/lib\n{d}/lib/util.js\nsemanage\0{d}/old.js\n{d}/lib/keep-me.js",
        d = dest.display()
    );
    fs::write(instr.join("g1-cleanup"), text).unwrap();
    let b = Bundle::new(host.path("bundle"));
    b.appspec(&single_mapping("/src", &dest))
        .file("src/new.js", "new");
    host.deploy_dir(&b.dir, &["-g", "g1"]).assert_ok();
    assert!(!dest.join("old.js").exists() && !dest.join("lib/util.js").exists());
    assert_eq!(
        fs::read_to_string(dest.join("lib/keep-me.js")).unwrap(),
        "old",
        "the unfinished line is not replayed"
    );
    assert_eq!(fs::read_to_string(dest.join("new.js")).unwrap(), "new");
}

#[test]
fn permissions_set_mode_owner_group_and_acls() {
    require_root();
    let user = require_test_user();
    let host = Host::new();
    let dest = host.path("opt/app");
    let b = Bundle::new(host.path("bundle"));
    b.appspec(&format!(
        "version: 0.0
os: linux
files:
  - source: /app
    destination: {d}
permissions:
  - object: {d}/bin
    pattern: '*.sh'
    owner: {u}
    group: {g}
    mode: 4750
    type: [file]
  - object: {d}/data
    owner: {u}
    mode: 640
    type: [file]
  - object: {d}
    pattern: data
    type: [directory]
    mode: 2770
    acls:
      - 'u:{u}:rwx'
      - 'd:g:{g}:rx'
    context:
      type: httpd_sys_content_t
",
        d = dest.display(),
        u = TEST_USER,
        g = TEST_EXTRA_GROUP
    ));
    b.script("app/bin/run.sh", "true")
        .file("app/bin/readme.txt", "x")
        .file("app/data/db.json", "{}");
    let run = host.deploy_dir(&b.dir, &[]);
    run.assert_ok();
    let md = fs::metadata(dest.join("bin/run.sh")).unwrap();
    let extra_gid = nix::unistd::Group::from_name(TEST_EXTRA_GROUP)
        .unwrap()
        .unwrap()
        .gid
        .as_raw();
    assert_eq!(
        (md.mode() & 0o7777, md.uid(), md.gid()),
        (0o4750, user.uid.as_raw(), extra_gid),
        "set-uid survives the owner change"
    );
    assert_eq!(
        fs::metadata(dest.join("bin/readme.txt")).unwrap().uid(),
        0,
        "pattern selects *.sh only"
    );
    let db = fs::metadata(dest.join("data/db.json")).unwrap();
    assert_eq!((db.mode() & 0o777, db.uid()), (0o640, user.uid.as_raw()));
    // ACLs checked with the acl package's getfacl, not with our own code.
    let out = Command::new("getfacl")
        .arg("-p")
        .arg(dest.join("data"))
        .output()
        .expect("getfacl (apt-get install acl)");
    let acl = String::from_utf8_lossy(&out.stdout);
    assert!(acl.contains(&format!("user:{TEST_USER}:rwx")), "{acl}");
    assert!(
        acl.contains(&format!("default:group:{TEST_EXTRA_GROUP}:r-x")),
        "{acl}"
    );
    assert!(acl.contains("flags: -s-"), "set-gid directory: {acl}");
    // SELinux is off on this host: the context is reported as skipped.
    assert!(
        run.event_line("Install")
            .contains("SELinux contexts skipped on 1"),
        "{}",
        run.stdout
    );
}

#[test]
fn bad_appspec_reports_the_line_and_installs_nothing() {
    let host = Host::new();
    let dest = host.path("srv/bad");
    let b = Bundle::new(host.path("bundle"));
    b.appspec(
        &(single_mapping("/", &dest)
            + "hooks:\n  AfterInstall:\n    - location: a.sh\n      timeout: soon\n"),
    );
    let run = host.deploy_dir(&b.dir, &[]);
    run.assert_failed();
    // The first event that reads the new revision's appspec reports it.
    let line = run.event_line("BeforeInstall");
    assert!(
        line.contains("appspec.yml:9:16: error: hooks.AfterInstall[0].timeout"),
        "{line}"
    );
    assert!(!dest.exists());
}

#[test]
fn a_failed_preflight_does_not_remove_the_previous_revision() {
    let host = Host::new();
    let dest = host.path("srv/app");
    let v1 = Bundle::new(host.path("v1"));
    v1.appspec(&single_mapping("/s", &dest))
        .file("s/v1.txt", "1");
    host.deploy_dir(&v1.dir, &[]).assert_ok();
    let v2 = Bundle::new(host.path("v2"));
    v2.appspec(
        &(single_mapping("/s", &dest)
            + &format!(
                "permissions:\n  - object: {}\n    owner: no-such-user-here\n",
                dest.display()
            )),
    )
    .file("s/v2.txt", "2");
    let run = host.deploy_dir(&v2.dir, &[]);
    run.assert_failed();
    assert!(
        run.event_line("Install")
            .contains("appspec.yml:7:5: permissions[0]: user \"no-such-user-here\" does not exist"),
        "{}",
        run.stdout
    );
    assert_eq!(
        fs::read_to_string(dest.join("v1.txt")).unwrap(),
        "1",
        "v1 is still installed"
    );
    assert!(!dest.join("v2.txt").exists());
}

#[test]
fn a_conflict_found_before_cleanup_keeps_the_previous_revision() {
    let host = Host::new();
    let dest = host.path("srv/app");
    let v1 = Bundle::new(host.path("v1"));
    let spec = single_mapping("/s", &dest);
    v1.appspec(&spec).file("s/v1.txt", "1");
    host.deploy_dir(&v1.dir, &[]).assert_ok();
    // A file the operator created, which v2 would also install.
    fs::write(dest.join("foreign.txt"), "mine").unwrap();
    let v2 = Bundle::new(host.path("v2"));
    v2.appspec(&spec)
        .file("s/v2.txt", "2")
        .file("s/foreign.txt", "theirs");
    let before = snapshot(&dest);
    let run = host.deploy_dir(&v2.dir, &[]);
    run.assert_failed();
    assert!(
        run.event_line("Install")
            .contains("already exists at this location"),
        "{}",
        run.stdout
    );
    assert_eq!(
        snapshot(&dest),
        before,
        "the previous revision and the operator's file are untouched"
    );
    assert!(
        host.instructions("default-local-deployment-group-cleanup")
            .exists(),
        "v1's cleanup file is kept"
    );
}

#[test]
fn tar_owners_are_kept_as_by_tar_unless_configured_otherwise() {
    require_root();
    let user = require_test_user();
    for (config, expected_uid) in [
        ("", user.uid.as_raw()),
        (":ignore_ownership_in_bundle: true\n", 0),
    ] {
        let host = Host::with_config(config);
        let dest = host.path("srv/own");
        let b = Bundle::new(host.path("bundle"));
        b.appspec(&single_mapping("/www", &dest))
            .file("www/page.html", "x");
        std::os::unix::fs::chown(
            b.dir.join("www/page.html"),
            Some(user.uid.as_raw()),
            Some(user.gid.as_raw()),
        )
        .unwrap();
        let tar = b.tar(&host.path("b.tar"));
        host.local(&["-l", &tar.display().to_string(), "-t", "tar"])
            .assert_ok();
        assert_eq!(
            fs::metadata(dest.join("page.html")).unwrap().uid(),
            expected_uid,
            "config {config:?}"
        );
    }
}

#[test]
fn archives_of_every_type_deploy_and_a_single_top_directory_is_stripped() {
    let host = Host::new();
    let b = Bundle::new(host.path("bundle"));
    let dest = host.path("srv/t");
    b.appspec(&single_mapping("/", &dest))
        .script("bin/run.sh", "true")
        .file("conf/app.conf", "k=v")
        .symlink("current", "conf");
    let cases = [
        (
            "tgz",
            b.tgz_with_prefix(&host.path("nested.tgz"), "myapp-1.0"),
        ),
        ("tar", b.tar(&host.path("b.tar"))),
        ("zip", b.zip(&host.path("b.zip"))),
    ];
    for (i, (kind, file)) in cases.iter().enumerate() {
        let group = format!("g{i}");
        let loc = file.display().to_string();
        let run = host.local(&["-l", &loc, "-t", kind, "-g", &group, "-b", "OVERWRITE"]);
        run.assert_ok();
        assert_eq!(
            fs::read_to_string(dest.join("conf/app.conf")).unwrap(),
            "k=v",
            "{kind}"
        );
        assert_eq!(
            fs::metadata(dest.join("bin/run.sh"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o755,
            "{kind}"
        );
        assert_eq!(
            fs::read_link(dest.join("current")).unwrap(),
            Path::new("conf"),
            "{kind}: symlinks stay symlinks"
        );
        assert!(!dest.join("myapp-1.0").exists());
        fs::remove_dir_all(&dest).unwrap();
    }
}

#[test]
fn events_option_runs_only_the_named_events() {
    let host = Host::new();
    let record = host.path("record");
    let b = Bundle::new(host.path("bundle"));
    b.appspec("version: 0.0\nos: linux\nhooks:\n  BeforeInstall:\n    - location: r.sh\n  ApplicationStart:\n    - location: r.sh\n  HealthCheck:\n    - location: r.sh\n")
        .script("r.sh", &recorder(&record));
    let run = host.deploy_dir(&b.dir, &["-e", "ApplicationStart,HealthCheck"]);
    run.assert_ok();
    assert_eq!(
        fs::read_to_string(&record).unwrap(),
        "ApplicationStart r.sh root\nHealthCheck r.sh root\n"
    );
    let events: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.contains(" ok "))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(
        events,
        vec![
            "DownloadBundle",
            "Install",
            "ApplicationStart",
            "HealthCheck"
        ]
    );
    // As in the official agent, an appspec hook for a custom event the
    // deployment does not name is an error at Install ...
    let run = host.deploy_dir(&b.dir, &["-e", "ApplicationStart"]);
    run.assert_failed();
    assert!(
        run.event_line("Install")
            .contains("appspec.yml file contains unknown lifecycle events: HealthCheck"),
        "{}",
        run.stdout
    );
    // ... and so is a custom event the appspec does not define.
    let plain = Bundle::new(host.path("plain"));
    plain.appspec("version: 0.0\nos: linux\n");
    let run = host.deploy_dir(&plain.dir, &["-e", "Smoke"]);
    run.assert_failed();
    assert!(
        run.event_line("Install")
            .contains("doesn't exist in your appspec.yml file: Smoke"),
        "{}",
        run.stdout
    );
    // The official ordering rules are enforced before anything runs.
    let run = host.deploy_dir(&b.dir, &["-e", "ApplicationStart,DownloadBundle"]);
    run.assert_failed();
    assert!(
        run.stderr
            .contains("The only events that can be specified before DownloadBundle"),
        "{}",
        run.stderr
    );
}

#[test]
fn old_revisions_are_removed_beyond_max_revisions() {
    let host = Host::with_config(":max_revisions: 2\n");
    let b = Bundle::new(host.path("bundle"));
    b.appspec("version: 0.0\nos: linux\n");
    for _ in 0..4 {
        host.deploy_dir(&b.dir, &[]).assert_ok();
    }
    let deps = host.deployments("default-local-deployment-group");
    assert_eq!(deps.len(), 2, "{deps:?}");
    let last = fs::read_to_string(
        host.instructions("default-local-deployment-group_last_successful_install"),
    )
    .unwrap();
    assert!(deps.iter().any(|d| Path::new(&last) == d));
}

#[test]
fn codedeploy_local_name_works_as_an_alias() {
    let host = Host::new();
    let b = Bundle::new(host.path("bundle"));
    b.appspec("version: 0.0\nos: linux\n");
    let alias = host.path("codedeploy-local");
    std::os::unix::fs::symlink(agent_bin(), &alias).unwrap();
    let mut cmd = Command::new(&alias);
    cmd.args(["-c"]).arg(&host.conf).arg("-l").arg(&b.dir);
    let run = run_with_deadline(&mut cmd, std::time::Duration::from_secs(60));
    run.assert_ok();
}
