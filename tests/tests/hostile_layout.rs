//! The deployment root stays whole whatever a group is called and however
//! a previous run ended.

use std::fs;

use testbed::bundle::Bundle;
use testbed::*;

fn site(host: &Host, name: &str) -> Bundle {
    let b = Bundle::new(host.path(name));
    b.file("site/index.html", "hi\n");
    b.appspec(&format!(
        "version: 0.0\nos: linux\nfiles:\n  - source: site\n    destination: {}\n",
        host.path(&format!("dest-{name}")).display()
    ));
    b
}

#[test]
fn a_group_named_like_a_folder_of_the_root_is_refused_and_touches_nothing() {
    let host = Host::new();
    let b = site(&host, "a");
    host.deploy_dir(&b.dir, &["-g", "web"]).assert_ok();
    let before = snapshot(&host.root());
    for g in [
        "deployment-instructions",
        "deployment-logs",
        "ongoing-deployment",
        "load-balancer",
    ] {
        let run = host.deploy_dir(&site(&host, "b").dir, &["-g", g]);
        assert_eq!(
            run.status.code(),
            Some(2),
            "{g}: {}{}",
            run.stdout,
            run.stderr
        );
        assert!(
            run.stderr.contains("deployment root's own folder"),
            "{}",
            run.stderr
        );
        assert_eq!(snapshot(&host.root()), before, "{g}: the root changed");
    }
    // The other group's next deployment is unaffected.
    host.deploy_dir(&site(&host, "c").dir, &["-g", "web"])
        .assert_ok();
}

#[test]
fn what_a_killed_run_left_is_removed_at_the_groups_next_start() {
    let host = Host::new();
    host.deploy_dir(&site(&host, "a").dir, &["-g", "web"])
        .assert_ok();
    let ins = host.root().join("deployment-instructions");
    let dep = host.deployments("web")[0].clone();
    // What a kill -9 leaves: a temporary record, and a half-unpacked archive.
    fs::write(ins.join("web-install.json.tmp-4242"), "{\"instr").unwrap();
    fs::write(ins.join(".web_most_recent_install.tmp-4242"), "/x").unwrap();
    fs::create_dir_all(dep.join(".deployment-archive.partial/site")).unwrap();
    fs::write(dep.join(".deployment-archive.partial/site/half"), "x").unwrap();
    // Another group's leftovers are its own business.
    fs::write(ins.join("other-install.json.tmp-4242"), "x").unwrap();
    host.deploy_dir(&site(&host, "b").dir, &["-g", "web"])
        .assert_ok();
    assert!(!ins.join("web-install.json.tmp-4242").exists());
    assert!(!ins.join(".web_most_recent_install.tmp-4242").exists());
    assert!(!dep.join(".deployment-archive.partial").exists());
    assert!(ins.join("other-install.json.tmp-4242").exists());
}
