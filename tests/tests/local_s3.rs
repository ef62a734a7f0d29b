//! `codedeploy-agent local --bundle-location s3://...`: the same S3 code
//! path as the daemon, with the standard credential chain, against moto.

use std::fs;

use testbed::bed::Testbed;
use testbed::bundle::{single_mapping, Bundle};
use testbed::Host;

#[test]
fn local_deploys_a_bundle_from_s3_by_version() {
    testbed::require_root();
    let bed = Testbed::new();
    let host = Host::with_config(&format!(":s3_endpoint_override: {}\n", bed.s3.endpoint()));
    let dest = host.path("installed");
    let b = Bundle::new(host.path("bundle"));
    b.file("app/version.txt", "one\n");
    b.appspec(&single_mapping("app", &dest));
    let (v1, _) = bed.upload("local-s3", "app.tgz", &b.tgz(&host.path("one.tgz")));
    b.file("app/version.txt", "two\n");
    bed.upload("local-s3", "app.tgz", &b.tgz(&host.path("two.tgz")));

    let env = [
        ("AWS_ACCESS_KEY_ID", "local-test"),
        ("AWS_SECRET_ACCESS_KEY", "local-test-secret"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_CONFIG_FILE", "/dev/null"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
    ];
    // The older version, by its version id, although a newer one exists.
    let loc = format!("s3://local-s3/app.tgz?versionId={v1}");
    host.local_with_env(&["-l", &loc, "-t", "tgz"], &env)
        .assert_ok();
    assert_eq!(
        fs::read_to_string(dest.join("version.txt")).unwrap(),
        "one\n"
    );

    let r = host.local_with_env(&["-l", "s3://local-s3/missing.tgz", "-t", "tgz"], &env);
    r.assert_failed();
    assert!(
        r.stdout.contains("s3://local-s3/missing.tgz"),
        "{}",
        r.stdout
    );

    let r = host.local_with_env(&["-l", "s3://local-s3/app.tgz", "-t", "directory"], &env);
    assert!(
        r.stderr.contains("the type must be tgz, tar or zip"),
        "{}",
        r.stderr
    );
}
