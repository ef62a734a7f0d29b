//! Migration from the official agent (packaging/migrate, what the rpm and
//! deb scriptlets run), in a throwaway root with `systemctl` replaced by a
//! recorder that starts and stops the real binary: the configuration and
//! the deployment root come through byte-identical, the old service is
//! stopped (after its running command) before ours starts, ours polls, and
//! the next deployment cleans up the official agent's last revision exactly
//! as its cleanup file recorded.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use testbed::bed::Testbed;
use testbed::bundle::Bundle;
use testbed::{agent_bin, snapshot, wait_until};

const GROUP: &str = "my-group";

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/migrate")
}

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

struct Host {
    root: PathBuf,
    conf: PathBuf,
}

impl Host {
    fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }

    fn migrate(&self, step: &str) -> Command {
        let mut c = Command::new("sh");
        c.arg(script())
            .arg(step)
            .env("CODEDEPLOY_ROOT", &self.root)
            .env("SYSTEMCTL", self.p("bin/systemctl"))
            .env("MIGRATE_IDLE_TIMEOUT", "120")
            .env("MIGRATE_POLL_CHECK_SECONDS", "60");
        c
    }

    fn recorded(&self) -> Vec<String> {
        fs::read_to_string(self.p("systemctl.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn agent(&self, cmd: &str) -> std::process::Output {
        Command::new(self.p("opt/codedeploy-agent/bin/codedeploy-agent"))
            .arg("--config_file")
            .arg(&self.conf)
            .arg(cmd)
            .output()
            .unwrap()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.agent("stop");
    }
}

/// The official agent's host: its configuration (pointed at the testbed),
/// an on-premises file, its unit under /etc, a running service, and the
/// deployment root its last deployment left, with that revision's files.
fn official_host(bed: &Testbed, testbed_config: &Path) -> Host {
    let root = bed.path("host");
    let r = |rel: &str| root.join(rel);
    let deployment_root = r("opt/codedeploy-agent/deployment-root");
    let config = fs::read_to_string(testbed_config)
        .unwrap()
        .lines()
        .filter(|l| {
            !l.starts_with(":root_dir:")
                && !l.starts_with(":pid_dir:")
                && !l.starts_with(":log_dir:")
        })
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        + &format!(
            ":root_dir: '{}'\n:pid_dir: '{}'\n:log_dir: '{}'\n",
            deployment_root.display(),
            r("opt/codedeploy-agent/state/.pid").display(),
            r("var/log/aws/codedeploy-agent").display()
        );
    let conf = r("etc/codedeploy-agent/conf/codedeployagent.yml");
    write(&conf, &config);
    write(
        &r("etc/codedeploy-agent/conf/codedeploy.onpremises.yml"),
        "---\nregion: us-east-1\n",
    );
    write(
        &r("etc/systemd/system/codedeploy-agent.service"),
        "[Service]\nType=forking\nExecStart=/opt/codedeploy-agent/bin/codedeploy-agent start\n",
    );
    write(
        &r("opt/codedeploy-agent/bin/codedeploy-agent"),
        "#!/bin/sh\n# the official agent\n",
    );
    // The last deployment of the group, as the official agent records it.
    let d = deployment_root.join(GROUP).join("d-OFFICIAL1");
    write(
        &d.join("deployment-archive/appspec.yml"),
        "version: 0.0\nos: linux\nfiles:\n  - source: site\n    destination: /var/www\n",
    );
    write(&d.join("deployment-archive/site/old.html"), "old\n");
    let www = r("var/www");
    write(&www.join("old.html"), "old\n");
    write(&www.join("sub/older.css"), "older\n");
    write(&www.join("not-ours.txt"), "someone else's\n");
    let instructions = deployment_root.join("deployment-instructions");
    write(
        &instructions.join(format!("{GROUP}-cleanup")),
        &format!(
            "{}\n{}\n{}\n",
            www.join("old.html").display(),
            www.join("sub/older.css").display(),
            www.join("sub").display()
        ),
    );
    write(
        &instructions.join(format!("{GROUP}_last_successful_install")),
        &d.display().to_string(),
    );
    fs::create_dir_all(deployment_root.join("ongoing-deployment")).unwrap();
    fs::create_dir_all(r("run/systemd/system")).unwrap();
    // systemctl, recorded; start and stop drive whatever binary is installed.
    let agent = r("opt/codedeploy-agent/bin/codedeploy-agent");
    write(
        &r("bin/systemctl"),
        &format!(
            "#!/bin/sh\necho \"$*\" >> '{log}'\ncase \"$1\" in\n  is-active) [ -e '{active}' ] ;;\n  stop) rm -f '{active}'; '{agent}' --config_file '{conf}' stop >/dev/null 2>&1; exit 0 ;;\n  start|restart) touch '{active}'; exec '{agent}' --config_file '{conf}' start ;;\n  *) exit 0 ;;\nesac\n",
            log = r("systemctl.log").display(),
            active = r("active").display(),
            agent = agent.display(),
            conf = conf.display(),
        ),
    );
    fs::set_permissions(r("bin/systemctl"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(r("active"), "").unwrap();
    Host { root, conf }
}

/// What the package puts on disk (packaging/build stages the same files).
fn install_package_files(h: &Host) {
    let bin = h.p("opt/codedeploy-agent/bin/codedeploy-agent");
    fs::copy(agent_bin(), &bin).unwrap();
    std::os::unix::fs::symlink(
        "codedeploy-agent",
        h.p("opt/codedeploy-agent/bin/codedeploy-local"),
    )
    .unwrap();
    let pkg = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging");
    write(
        &h.p("opt/codedeploy-agent/share/codedeployagent.yml"),
        &fs::read_to_string(pkg.join("codedeployagent.yml")).unwrap(),
    );
    write(
        &h.p("usr/lib/systemd/system/codedeploy-agent.service"),
        &fs::read_to_string(pkg.join("codedeploy-agent.service")).unwrap(),
    );
}

#[test]
fn migration_from_the_official_agent_keeps_config_and_deployment_root() {
    testbed::require_root();
    let bed = Testbed::new();
    let testbed_agent = bed.instance("i-0migrate01", &[("role", "web")]);
    let h = official_host(&bed, &testbed_agent.config);
    let conf_before = snapshot(&h.p("etc/codedeploy-agent"));
    let conf_bytes = fs::read(&h.conf).unwrap();
    let root_before = snapshot(&h.p("opt/codedeploy-agent/deployment-root"));

    // The official agent is in the middle of a command: nothing is stopped
    // until it finishes.
    let tracker = h.p("opt/codedeploy-agent/deployment-root/ongoing-deployment/d-RUNNING");
    fs::write(&tracker, "hc-1").unwrap();
    let out_path = h.p("before-install.out");
    let mut pre = h
        .migrate("before-install")
        .stdout(fs::File::create(&out_path).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    wait_until(
        Duration::from_secs(30),
        "migrate waits for the command",
        || {
            fs::read_to_string(&out_path)
                .unwrap_or_default()
                .contains("waiting for the running deployment command")
        },
    );
    assert!(
        !h.recorded().iter().any(|l| l.starts_with("stop")),
        "stopped during a command: {:?}",
        h.recorded()
    );
    fs::remove_file(&tracker).unwrap();
    assert!(pre.wait().unwrap().success());
    assert!(
        h.recorded().contains(&"stop codedeploy-agent".to_string()),
        "{:?}",
        h.recorded()
    );
    assert!(
        !h.p("etc/systemd/system/codedeploy-agent.service").exists(),
        "the official unit would shadow ours"
    );

    // The package manager replaces the files; rpm also deletes the official
    // package's unmodified configuration, which after-install puts back.
    install_package_files(&h);
    fs::remove_file(&h.conf).unwrap();
    let post = h.migrate("after-install").output().unwrap();
    let said = String::from_utf8_lossy(&post.stdout);
    assert!(
        post.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&post.stderr)
    );
    assert!(said.contains("running and polling"), "{said}");
    let calls = h.recorded();
    let stop = calls
        .iter()
        .position(|l| l == "stop codedeploy-agent")
        .unwrap();
    let start = calls
        .iter()
        .position(|l| l == "start codedeploy-agent")
        .unwrap();
    assert!(stop < start, "old stopped before ours started: {calls:?}");
    assert!(
        calls.contains(&"enable codedeploy-agent".to_string()),
        "{calls:?}"
    );
    let status = String::from_utf8_lossy(&h.agent("status").stdout).into_owned();
    assert!(status.contains("last successful poll: "), "{status}");

    assert_eq!(
        fs::read(&h.conf).unwrap(),
        conf_bytes,
        "configuration byte-identical"
    );
    assert_eq!(snapshot(&h.p("etc/codedeploy-agent")), conf_before);
    assert!(h.agent("stop").status.success());
    assert_eq!(
        snapshot(&h.p("opt/codedeploy-agent/deployment-root")),
        root_before,
        "deployment root untouched"
    );

    // The next deployment to the group removes what the official agent's
    // last install recorded, and nothing else.
    let b = Bundle::new(bed.path("next"));
    b.file("site/new.html", "new\n");
    b.appspec(&format!(
        "version: 0.0\nos: linux\nfiles:\n  - source: site\n    destination: {}\n",
        h.p("var/www").display()
    ));
    let out = Command::new(h.p("opt/codedeploy-agent/bin/codedeploy-local"))
        .arg("--agent-configuration-file")
        .arg(&h.conf)
        .args([
            "-l",
            b.dir.to_str().unwrap(),
            "-t",
            "directory",
            "-g",
            GROUP,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let www = snapshot(&h.p("var/www"));
    let names: Vec<String> = www.keys().map(|p| p.display().to_string()).collect();
    assert_eq!(names, vec!["new.html", "not-ours.txt"], "{www:?}");
}
