//! Deployment specifications are signed; the agent runs nothing from one
//! whose signature or signer is wrong.

use std::fs;

use testbed::bed::Testbed;
use testbed::control::Tamper;
use testbed::scenario::*;

#[test]
fn tampered_or_wrongly_signed_specifications_run_nothing() {
    testbed::require_root();
    let bed = Testbed::new();
    let agents = fleet(&bed, 1);
    let a = &agents[0];
    setup_group(&bed, "CodeDeployDefault.OneAtATime");
    let good = deploy_version(&bed, "e2e-signed", "v1", "zip", 0);
    assert_eq!(
        bed.wait_deployment(&good, LIMIT),
        "Succeeded",
        "{}",
        logs(&agents)
    );
    let ran_before = hook_lines(a);

    for (mode, expect) in [
        (
            Tamper::Content,
            "signature verification of the deployment specification failed",
        ),
        (
            Tamper::UntrustedSigner,
            "signature verification of the deployment specification failed",
        ),
        (
            Tamper::WrongSubject,
            "CN=codedeploy-signer-eu-west-1.amazonaws.com",
        ),
        (
            Tamper::Unsigned,
            "unsupported deployment specification format \"TEXT/JSON\"",
        ),
    ] {
        bed.control.set_tamper(Some(mode));
        let d = deploy_version(&bed, "e2e-signed", &format!("{mode:?}"), "zip", 0);
        assert_eq!(
            bed.wait_deployment(&d, LIMIT),
            "Failed",
            "{mode:?}\n{}",
            logs(&agents)
        );
        let s = instance_summary(&bed, &d, &a.imds.instance_id);
        let stop = event(&s, "ApplicationStop");
        assert_eq!(stop["status"], "Failed", "{mode:?}: {s:#}");
        let msg = message(stop);
        assert!(msg.contains(expect), "{mode:?}: {msg}");
        assert_eq!(event(&s, "DownloadBundle")["status"], "Skipped", "{mode:?}");
        assert_eq!(hook_lines(a), ran_before, "{mode:?}: a script ran");
        assert!(!a
            .root()
            .join(format!("{}/{d}", group_id(&bed)))
            .join("deployment-archive")
            .exists());
        assert_eq!(
            fs::read_to_string(a.dir.join("www/index.html")).unwrap(),
            "<h1>v1</h1>\n"
        );
    }

    bed.control.set_tamper(None);
    let after = deploy_version(&bed, "e2e-signed", "v2", "zip", 0);
    assert_eq!(
        bed.wait_deployment(&after, LIMIT),
        "Succeeded",
        "{}",
        logs(&agents)
    );
    assert_eq!(
        fs::read_to_string(a.dir.join("www/index.html")).unwrap(),
        "<h1>v2</h1>\n"
    );
}

fn group_id(bed: &Testbed) -> String {
    bed.control
        .with_state(|s| s.groups.values().next().unwrap().id.clone())
}
