//! Every size a bundle controls has a bound, checked while it unpacks: zip
//! bombs, sparse members declaring a terabyte, and more content or entries
//! than the configured limits. A refused bundle leaves nothing behind.

use std::fs;
use std::os::unix::fs::MetadataExt;

use testbed::evil;
use testbed::*;

fn deploy_bytes(host: &Host, kind: &str, bytes: &[u8]) -> Run {
    let file = host.path(&format!("bundle.{kind}"));
    fs::write(&file, bytes).unwrap();
    host.local(&["-l", &file.display().to_string(), "-t", kind])
}

fn nothing_left(host: &Host) {
    for d in host.deployments("default-local-deployment-group") {
        assert!(!d.join("deployment-archive").exists(), "{}", d.display());
        assert!(!d.join(".deployment-archive.partial").exists());
    }
}

#[test]
fn zip_entries_sharing_one_compressed_member_are_refused() {
    let host = Host::new();
    let run = deploy_bytes(&host, "zip", &evil::zip_overlapping(64, 4 << 20));
    run.assert_failed();
    let line = run.event_line("DownloadBundle");
    assert!(line.contains("share bytes"), "{line}");
    nothing_left(&host);
}

#[test]
fn a_sparse_member_declaring_a_terabyte_is_refused_before_it_is_read() {
    let host = Host::new();
    let appspec = "version: 0.0\nos: linux\n";
    let run = deploy_bytes(
        &host,
        "tar",
        &evil::sparse_tar("huge.img", 1 << 40, appspec),
    );
    run.assert_failed();
    let line = run.event_line("DownloadBundle");
    assert!(
        line.contains(":revision_max_bytes:") && line.contains("huge.img"),
        "{line}"
    );
    nothing_left(&host);
}

#[test]
fn a_sparse_member_within_bounds_is_written_with_its_holes() {
    let host = Host::new();
    let real = 64u64 << 20;
    let dest = host.path("dest");
    let appspec = format!(
        "version: 0.0\nos: linux\nfiles:\n  - source: disk.img\n    destination: {}\n",
        dest.display()
    );
    deploy_bytes(&host, "tar", &evil::sparse_tar("disk.img", real, &appspec)).assert_ok();
    let unpacked =
        host.deployments("default-local-deployment-group")[0].join("deployment-archive/disk.img");
    // In the deployment archive and at the destination alike.
    for f in [unpacked, dest.join("disk.img")] {
        let m = fs::metadata(&f).unwrap();
        assert_eq!(m.len(), real);
        assert!(
            m.blocks() * 512 < 16 << 20,
            "{}: holes written as data: {} blocks",
            f.display(),
            m.blocks()
        );
        let data = fs::read(&f).unwrap();
        let (zeros, tail) = data.split_at(data.len() - 512);
        assert!(zeros.iter().all(|b| *b == 0) && tail.iter().all(|b| *b == b'x'));
    }
}

#[test]
fn content_past_the_byte_bound_is_refused_while_unpacking() {
    let host = Host::with_config(":revision_max_bytes: 1000000\n");
    // Headers are honest here; the bound is on the bytes that come out.
    let run = deploy_bytes(&host, "zip", &evil::zip_overlapping(1, 5 << 20));
    run.assert_failed();
    let line = run.event_line("DownloadBundle");
    assert!(line.contains("more than 1000000 bytes"), "{line}");
    nothing_left(&host);
}

#[test]
fn entries_past_the_entry_bound_are_refused() {
    let host = Host::with_config(":revision_max_entries: 10\n");
    let b = testbed::bundle::Bundle::new(host.path("many"));
    b.appspec("version: 0.0\nos: linux\n");
    for i in 0..20 {
        b.file(&format!("f{i}.txt"), "x");
    }
    let run = host.deploy_dir(&b.dir, &[]);
    run.assert_failed();
    let line = run.event_line("DownloadBundle");
    assert!(line.contains("more than 10 entries"), "{line}");
    nothing_left(&host);
}

#[test]
fn a_long_name_record_of_256_mib_is_refused_without_reading_it() {
    let host = Host::new();
    let bytes = evil::long_name_tgz(256 << 20);
    assert!(bytes.len() < 1 << 20, "{} bytes on the wire", bytes.len());
    let file = host.path("bundle.tgz");
    fs::write(&file, bytes).unwrap();
    // Under a memory limit: reading the record whole would need 256 MiB
    // more than the agent may have.
    let mut c = std::process::Command::new("prlimit");
    c.arg("--as=268435456")
        .arg("--")
        .arg(agent_bin())
        .args(["local", "-c"])
        .arg(&host.conf)
        .arg("-l")
        .arg(&file)
        .args(["-t", "tgz"])
        .current_dir(host.path(""));
    let run = run_with_deadline(&mut c, std::time::Duration::from_secs(120));
    assert_eq!(run.status.code(), Some(1), "{}{}", run.stdout, run.stderr);
    let line = run.event_line("DownloadBundle");
    assert!(
        line.contains("long-name record declares 268435456 bytes"),
        "{line}"
    );
    assert!(
        run.stdout.len() < 16 << 10,
        "output of {} bytes",
        run.stdout.len()
    );
    let log = fs::read_to_string(host.path("logs/codedeploy-local.log")).unwrap_or_default();
    assert!(
        log.lines().all(|l| l.len() < 16 << 10),
        "a log line is {} bytes",
        log.lines().map(str::len).max().unwrap_or(0)
    );
    nothing_left(&host);
}
