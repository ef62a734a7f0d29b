//! A destination too small for the new revision never costs the running
//! one: the install fails before anything is removed, and the next
//! revision that fits deploys cleanly. On a real (small) tmpfs.

use std::fs;
use std::process::Command;

use testbed::bundle::Bundle;
use testbed::*;

struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: std::path::PathBuf, size: &str) -> Tmpfs {
        fs::create_dir_all(&at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&at)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount a tmpfs at {} (needs root)", at.display());
        Tmpfs(at)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn revision(host: &Host, name: &str, dest: &std::path::Path, files: &[(&str, usize)]) -> Bundle {
    let b = Bundle::new(host.path(name));
    for (f, size) in files {
        b.file(
            &format!("site/{f}"),
            &name.repeat(size / name.len() + 1)[..*size],
        );
    }
    b.appspec(&format!(
        "version: 0.0\nos: linux\nfiles:\n  - source: site\n    destination: {}\n",
        dest.display()
    ));
    b
}

#[test]
fn a_revision_that_does_not_fit_leaves_the_previous_one_installed() {
    require_root();
    let host = Host::new();
    let disk = Tmpfs::mount(host.path("disk"), "4m");
    let dest = disk.0.join("www");
    let v1 = revision(
        &host,
        "v1",
        &dest,
        &[("index.html", 1000), ("big.bin", 1_500_000)],
    );
    host.deploy_dir(&v1.dir, &["-g", "web"]).assert_ok();
    let before = snapshot(&dest);
    let last = host.instructions("web_last_successful_install");
    let last_before = fs::read_to_string(&last).unwrap();

    // 3 MB do not fit beside 1.5 MB on 4 MB, nor would they once v1 is gone
    // and ENOSPC struck midway.
    let v2 = revision(
        &host,
        "v2",
        &dest,
        &[("index.html", 1000), ("huge.bin", 3_000_000)],
    );
    let run = host.deploy_dir(&v2.dir, &["-g", "web"]);
    run.assert_failed();
    assert!(
        run.event_line("Install")
            .contains("not enough space for the new revision"),
        "{}",
        run.stdout
    );
    assert_eq!(snapshot(&dest), before, "the running revision is intact");
    assert_eq!(fs::read_to_string(&last).unwrap(), last_before);

    // The next revision that fits replaces v1 cleanly.
    let v3 = revision(&host, "v3", &dest, &[("index.html", 2000)]);
    host.deploy_dir(&v3.dir, &["-g", "web"]).assert_ok();
    let names: Vec<String> = fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["index.html"]);
    assert_eq!(fs::read(dest.join("index.html")).unwrap().len(), 2000);
}

/// `chattr +i` on a directory while it lives; removed at drop.
struct Immutable(std::path::PathBuf);

impl Immutable {
    fn set(p: std::path::PathBuf) -> Immutable {
        let ok = Command::new("chattr")
            .arg("+i")
            .arg(&p)
            .status()
            .unwrap()
            .success();
        assert!(
            ok,
            "chattr +i {} (needs root and ext4 or similar)",
            p.display()
        );
        Immutable(p)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

#[test]
fn a_failure_midway_puts_the_previous_revision_back() {
    require_root();
    let host = Host::new();
    let dest = host.path("www");
    let v1 = revision(
        &host,
        "v1",
        &dest,
        &[("index.html", 1000), ("sub/app.js", 5000)],
    );
    host.deploy_dir(&v1.dir, &["-g", "web"]).assert_ok();
    // A directory of the operator's that nothing can be written into: the
    // checks pass (it is there, it is a directory), the copy fails midway,
    // as it would on ENOSPC or EDQUOT after other files were written.
    fs::create_dir_all(dest.join("locked")).unwrap();
    let _lock = Immutable::set(dest.join("locked"));
    let before = snapshot(&dest);
    let cleanup = host.instructions("web-cleanup");
    let cleanup_before = fs::read(&cleanup).unwrap();
    let v2 = revision(
        &host,
        "v2",
        &dest,
        &[
            ("index.html", 3000),
            ("new.html", 10),
            ("sub/app.js", 7000),
            ("locked/x.conf", 10),
        ],
    );
    let run = host.deploy_dir(&v2.dir, &["-g", "web"]);
    run.assert_failed();
    let line = run.event_line("Install");
    assert!(line.contains("locked/x.conf"), "{}", run.stdout);
    assert_eq!(
        snapshot(&dest),
        before,
        "the previous revision is back, as it was"
    );
    assert_eq!(
        fs::read(&cleanup).unwrap(),
        cleanup_before,
        "and its cleanup file"
    );
    assert!(
        !host.path(".codedeploy-previous").exists(),
        "no backup is left"
    );
    assert!(
        !host.instructions("web-cleanup.previous").exists(),
        "nor the previous cleanup file's second name"
    );
    drop(_lock);
    // The next good revision replaces v1 cleanly.
    let v3 = revision(&host, "v3", &dest, &[("index.html", 2000)]);
    host.deploy_dir(&v3.dir, &["-g", "web"]).assert_ok();
    let mut names: Vec<String> = fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["index.html", "locked"]);
    assert!(!host.path(".codedeploy-previous").exists());
}
