//! Hostile revisions: every one is refused with a clear error, and nothing
//! is written outside the deployment directory.

use std::fs;
use std::path::PathBuf;

use testbed::evil::{self, Entry};
use testbed::*;

/// Deploy `bytes` as a bundle of `kind`; return the agent's DownloadBundle
/// line after checking that it failed and that the host is unchanged.
fn refused(kind: &str, entries: &[Entry]) -> String {
    let host = Host::new();
    // A sibling of the deployment root that an escape would reach.
    let outside = host.path("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("precious"), "keep").unwrap();
    let bytes = match kind {
        "tar" => evil::tar(entries),
        "tgz" => evil::tgz(entries),
        "zip" => evil::zip(entries),
        _ => unreachable!(),
    };
    let file = host.path(&format!("bundle.{kind}"));
    fs::write(&file, bytes).unwrap();
    let before_outside = snapshot(&outside);
    let before_tmp: Vec<PathBuf> = fs::read_dir("/tmp")
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.ends_with("pwned"))
        .collect();
    let run = host.local(&["-l", &file.display().to_string(), "-t", kind]);
    run.assert_failed();
    let line = run.event_line("DownloadBundle");
    assert!(line.contains("FAILED"), "{line}");
    assert_eq!(
        snapshot(&outside),
        before_outside,
        "{kind} {entries:?}: something was written outside"
    );
    let after_tmp: Vec<PathBuf> = fs::read_dir("/tmp")
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.ends_with("pwned"))
        .collect();
    assert_eq!(before_tmp, after_tmp);
    assert!(!host.path("pwned").exists() && !host.root().join("pwned").exists());
    // No half-unpacked revision is left behind.
    for d in host.deployments("default-local-deployment-group") {
        assert!(!d.join("deployment-archive").exists(), "{}", d.display());
        assert!(
            !d.join(".deployment-archive.partial").exists(),
            "{}",
            d.display()
        );
    }
    line
}

const APPSPEC: Entry = Entry::File("appspec.yml", "version: 0.0\nos: linux\n");

#[test]
fn traversal_with_dotdot_is_refused() {
    for kind in ["tar", "tgz", "zip"] {
        let line = refused(kind, &[APPSPEC, Entry::File("../../../outside/pwned", "x")]);
        assert!(line.contains("'..' is not allowed"), "{kind}: {line}");
        let line = refused(
            kind,
            &[APPSPEC, Entry::File("a/../../../../outside/pwned", "x")],
        );
        assert!(line.contains("'..' is not allowed"), "{kind}: {line}");
    }
}

#[test]
fn absolute_paths_are_refused() {
    for kind in ["tar", "zip"] {
        let line = refused(kind, &[APPSPEC, Entry::File("/tmp/pwned", "x")]);
        assert!(
            line.contains("absolute paths are not allowed"),
            "{kind}: {line}"
        );
    }
}

#[test]
fn writing_through_a_symlink_is_refused() {
    for kind in ["tar", "zip"] {
        let line = refused(
            kind,
            &[
                APPSPEC,
                Entry::Symlink("dir", "sub"),
                Entry::File("dir/pwned", "x"),
            ],
        );
        assert!(line.contains("through the symlink dir"), "{kind}: {line}");
    }
}

#[test]
fn symlinks_pointing_outside_are_refused() {
    for kind in ["tar", "zip"] {
        let line = refused(kind, &[APPSPEC, Entry::Symlink("etc", "/etc/passwd")]);
        assert!(line.contains("absolute path /etc/passwd"), "{kind}: {line}");
        let line = refused(
            kind,
            &[
                APPSPEC,
                Entry::Dir("a/"),
                Entry::Symlink("a/up", "../../../outside"),
            ],
        );
        assert!(
            line.contains("points outside the revision"),
            "{kind}: {line}"
        );
        // Two links, each harmless alone, that climb out together.
        let line = refused(
            kind,
            &[
                APPSPEC,
                Entry::Dir("a/"),
                Entry::Symlink("a/root", ".."),
                Entry::Symlink("esc", "a/root/../outside"),
            ],
        );
        assert!(
            line.contains("climbs with '..' after a directory name"),
            "{kind}: {line}"
        );
    }
}

#[test]
fn hard_links_pointing_outside_are_refused() {
    let line = refused(
        "tar",
        &[APPSPEC, Entry::Hardlink("h", "../outside/precious")],
    );
    assert!(line.contains("hard link target"), "{line}");
    let line = refused("tar", &[APPSPEC, Entry::Hardlink("h", "/etc/passwd")]);
    assert!(line.contains("hard link target"), "{line}");
    // A hard link to a symlink that points elsewhere is not a regular file.
    let line = refused(
        "tar",
        &[
            APPSPEC,
            Entry::Symlink("l", "appspec.yml"),
            Entry::Hardlink("h", "l"),
        ],
    );
    assert!(line.contains("not a regular file"), "{line}");
}

#[test]
fn devices_and_fifos_are_refused() {
    let line = refused("tar", &[APPSPEC, Entry::CharDevice("null")]);
    assert!(line.contains("device files are not allowed"), "{line}");
    let line = refused("tar", &[APPSPEC, Entry::Fifo("pipe")]);
    assert!(line.contains("FIFOs are not allowed"), "{line}");
    let line = refused("zip", &[APPSPEC, Entry::Fifo("pipe")]);
    assert!(line.contains("special files"), "{line}");
}

#[test]
fn a_bundle_without_an_appspec_is_refused() {
    let line = refused("tgz", &[Entry::File("index.html", "x")]);
    assert!(line.contains("appspec file is not found"), "{line}");
}

#[test]
fn links_that_stay_inside_are_kept() {
    let host = Host::new();
    let dest = host.path("srv");
    let spec: &'static str =
        Box::leak(testbed::bundle::single_mapping("/", &dest).into_boxed_str());
    let bytes = evil::tar(&[
        Entry::File("appspec.yml", spec),
        Entry::File("lib/v1/core.js", "core"),
        Entry::Symlink("lib/current", "v1"),
        Entry::Dir("bin/"),
        Entry::Symlink("bin/core", "../lib/current/core.js"),
        Entry::Hardlink("lib/core-copy.js", "lib/v1/core.js"),
    ]);
    let file = host.path("ok.tar");
    fs::write(&file, bytes).unwrap();
    host.local(&["-l", &file.display().to_string(), "-t", "tar"])
        .assert_ok();
    assert_eq!(fs::read_to_string(dest.join("bin/core")).unwrap(), "core");
    assert_eq!(
        fs::read_link(dest.join("lib/current")).unwrap(),
        PathBuf::from("v1")
    );
    assert_eq!(
        fs::read_to_string(dest.join("lib/core-copy.js")).unwrap(),
        "core"
    );
}
