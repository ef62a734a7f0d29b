//! Discovery and restore rules over plain values, as the AWS calls of
//! `aws.rs` report them.

use super::*;
use crate::journal::{Group, HealthCheck, OnFailure, Phase};
use crate::test_support::{journal_with, section as lb};

fn hc(port: Option<u16>, matcher: &str, threshold: u32) -> HealthCheck {
    HealthCheck {
        protocol: "HTTP".into(),
        port,
        path: "/health".into(),
        matcher: matcher.into(),
        interval: 5,
        timeout: 2,
        healthy_threshold: threshold,
    }
}

fn classic(name: &str, instances: &[&str]) -> Classic {
    Classic {
        name: name.into(),
        instances: instances.iter().map(|s| s.to_string()).collect(),
        instance_port: Some(8080),
        layer4: false,
        health: hc(None, "", 5),
    }
}

fn tg(port: Option<u16>) -> Tg {
    Tg {
        arn: "arn:tg/web".into(),
        name: "web".into(),
        port,
        instance_type: true,
        layer4: false,
        health: hc(None, "200", 2),
        has_load_balancer: true,
    }
}

fn target(port: u16, state: &str) -> Target {
    Target {
        id: "i-1".into(),
        port,
        state: state.into(),
        reason: String::new(),
    }
}

fn clb(name: &str, registered: bool, via_group: bool, deregistered: bool) -> ClassicLb {
    ClassicLb {
        name: name.into(),
        registered,
        via_group,
        deregistered,
        draining: Some(30),
        instance_port: Some(8080),
        layer4: false,
        health: hc(None, "", 3),
    }
}

fn tgj(ports: &[u16], registered: &[u16], via_group: bool, deregistered: bool) -> TargetGroup {
    TargetGroup {
        arn: "arn:tg/web".into(),
        name: "web".into(),
        ports: ports.to_vec(),
        registered: registered.to_vec(),
        via_group,
        deregistered,
        delay: 10,
        layer4: false,
        health: hc(None, "200-299", 5),
        has_load_balancer: true,
    }
}

const AUTO: Listing = Listing {
    explicit: false,
    declared: false,
};
const DECLARED: Listing = Listing {
    explicit: true,
    declared: true,
};

#[test]
fn launching_and_leaving_instances_are_not_drained() {
    for s in ["Pending", "Pending:Wait", "Warmed:Running"] {
        let m = membership("i-1", "web", s, true);
        assert!(
            matches!(&m, Membership::Nothing(w) if w.contains("not in service yet")),
            "{s}: {m:?}"
        );
    }
    for s in ["Terminating", "Terminating:Wait", "Detaching"] {
        let m = membership("i-1", "web", s, true);
        assert!(
            matches!(&m, Membership::Nothing(w) if w.contains("never put back")),
            "{s}: {m:?}"
        );
    }
}

#[test]
fn in_service_is_drained_by_standby_or_directly() {
    assert_eq!(
        membership("i-1", "web", "InService", true),
        Membership::Standby
    );
    assert_eq!(
        membership("i-1", "web", "InService", false),
        Membership::InService
    );
}

#[test]
fn standby_not_entered_by_us_is_left_to_the_operator() {
    for s in ["Standby", "EnteringStandby"] {
        let m = membership("i-1", "web", s, true);
        assert!(
            matches!(&m, Membership::NotOurs(w) if w.contains("not entered by this agent")),
            "{s}: {m:?}"
        );
    }
}

#[test]
fn classic_load_balancers_selected_by_registration_or_attachment() {
    let c = classic("web", &["i-2", "i-1"]);
    assert_eq!(
        pick_classic(&c, "i-1", false, AUTO),
        Some(ClassicPick {
            registered: true,
            attached: false
        })
    );
    let other = classic("api", &["i-2"]);
    assert_eq!(pick_classic(&other, "i-1", false, AUTO), None);
    assert_eq!(
        pick_classic(&other, "i-1", true, AUTO),
        Some(ClassicPick {
            registered: false,
            attached: true
        })
    );
}

#[test]
fn an_explicit_classic_list_with_restore_to_declared_joins_unregistered() {
    let c = classic("web", &[]);
    assert_eq!(
        pick_classic(&c, "i-1", false, DECLARED),
        Some(ClassicPick {
            registered: false,
            attached: false
        })
    );
    let previous = Listing {
        explicit: true,
        declared: false,
    };
    assert_eq!(pick_classic(&c, "i-1", false, previous), None);
}

#[test]
fn target_group_ports_are_the_serving_registrations() {
    let now = [
        target(80, "healthy"),
        target(81, "draining"),
        target(82, "unhealthy"),
        target(83, "initial"),
        target(84, "unused"),
        target(85, "unavailable"),
    ];
    let p = pick_ports(&tg(Some(80)), &now, None, false, AUTO).unwrap();
    assert_eq!(p.registered, vec![80, 82, 83, 85]);
    assert_eq!(p.wanted, p.registered);
    assert_eq!(pick_ports(&tg(Some(80)), &[], None, false, AUTO), None);
}

#[test]
fn listed_ports_limit_the_target_group() {
    let now = [target(80, "healthy"), target(8080, "healthy")];
    let p = pick_ports(&tg(Some(80)), &now, Some(&[8080]), false, AUTO).unwrap();
    assert_eq!(p.registered, vec![8080]);
    assert_eq!(
        pick_ports(&tg(Some(80)), &now, Some(&[9000]), false, AUTO),
        None
    );
}

#[test]
fn restore_to_declared_adds_the_listed_or_default_port() {
    let now = [target(80, "healthy")];
    let p = pick_ports(&tg(Some(80)), &now, Some(&[80, 81]), false, DECLARED).unwrap();
    assert_eq!(p.registered, vec![80]);
    assert_eq!(p.wanted, vec![80, 81]);
    let fresh = pick_ports(&tg(Some(8443)), &[], None, false, DECLARED).unwrap();
    assert!(fresh.registered.is_empty());
    assert_eq!(fresh.wanted, vec![8443]);
}

#[test]
fn a_target_group_of_the_auto_scaling_group_uses_its_port() {
    let p = pick_ports(&tg(Some(8080)), &[], None, true, AUTO).unwrap();
    assert!(p.registered.is_empty());
    assert_eq!(p.wanted, vec![8080]);
    assert_eq!(pick_ports(&tg(None), &[], None, true, AUTO), None);
}

#[test]
fn standby_waits_for_the_longest_drain_of_the_group() {
    let mut off = clb("a", true, true, false);
    off.draining = None;
    let c = vec![clb("b", true, true, false), off, {
        let mut direct = clb("c", true, false, false);
        direct.draining = Some(900);
        direct
    }];
    let mut t = tgj(&[80], &[80], true, false);
    t.delay = 45;
    assert_eq!(group_drain_seconds(&c, &[t]), 45);
    assert_eq!(group_drain_seconds(&c, &[]), 30);
    assert_eq!(group_drain_seconds(&[], &[]), 0);
}

#[test]
fn nothing_selected_follows_if_not_registered() {
    let skip = nothing_selected(&lb(""), "i-1").unwrap();
    assert!(skip.contains("ifNotRegistered: skip") && skip.contains("i-1"));
    let fail = nothing_selected(&lb("  ifNotRegistered: fail\n"), "i-1").unwrap_err();
    assert!(fail.contains("(ifNotRegistered: fail)"), "{fail}");
}

#[test]
fn the_gate_is_kept_typed_and_written_as_before() {
    let g = gate(&lb("").health_gate);
    assert_eq!(g.url, GateTarget::Auto);
    let url = gate(
        &lb("  healthGate:\n    url: http://127.0.0.1:8080/up\n    expectStatus: \"200,204\"\n")
            .health_gate,
    );
    assert_eq!(url.url, GateTarget::Url("http://127.0.0.1:8080/up".into()));
    assert_eq!(url.expect, vec![(200, 200), (204, 204)]);
    let json = serde_json::to_string(&url).unwrap();
    assert!(
        json.contains("\"url\":\"http://127.0.0.1:8080/up\""),
        "{json}"
    );
    let none: Gate =
        serde_json::from_str(&json.replace("http://127.0.0.1:8080/up", "none")).unwrap();
    assert_eq!(none.url, GateTarget::None);
}

#[test]
fn the_minimum_is_lowered_only_when_standby_needs_it() {
    assert_eq!(lowered_min(2, 4), None);
    assert_eq!(lowered_min(3, 4), None);
    assert_eq!(lowered_min(4, 4), Some(3));
    assert_eq!(lowered_min(1, 1), Some(0));
    assert_eq!(lowered_min(0, 0), Some(0));
}

#[test]
fn processes_already_suspended_are_not_ours_and_launch_refuses() {
    let before = vec!["AZRebalance".to_string()];
    let wanted = vec!["AZRebalance".to_string(), "ReplaceUnhealthy".to_string()];
    assert_eq!(
        to_suspend("web", &before, &wanted).unwrap(),
        vec!["ReplaceUnhealthy".to_string()]
    );
    let e = to_suspend("web", &["Launch".to_string()], &wanted).unwrap_err();
    assert!(e.contains("Launch process is suspended"), "{e}");
}

#[test]
fn the_minimum_given_back_never_exceeds_desired() {
    assert_eq!(give_back(1, 3, 4), (4, 0));
    assert_eq!(give_back(2, 2, 3), (3, 1));
    assert_eq!(give_back(0, 3, 4), (3, 0));
    assert_eq!(give_back(1, 4, 4), (4, 1));
}

#[test]
fn the_drain_deregisters_what_serves_and_is_not_the_groups() {
    let j = journal_with(
        vec![
            clb("direct", true, false, false),
            clb("via-group", true, true, false),
            clb("declared", false, false, false),
        ],
        vec![
            tgj(&[80, 81], &[80], false, false),
            tgj(&[90], &[], false, false),
        ],
    );
    let d = deregistrations(&j);
    assert_eq!(d.classic, vec![0]);
    assert_eq!(d.target_groups, vec![(0, vec![80])]);
}

#[test]
fn a_restore_registers_what_was_taken_out_and_what_is_declared() {
    let j = journal_with(
        vec![
            clb("direct", true, false, true),
            clb("via-group", true, true, false),
            clb("declared", false, false, false),
        ],
        vec![
            tgj(&[80, 81], &[80], false, true),
            tgj(&[90], &[], false, false),
        ],
    );
    let r = registrations(&j, true);
    assert_eq!(r.classic, vec![0, 2]);
    assert_eq!(r.target_groups, vec![(0, vec![80, 81]), (1, vec![90])]);
    let undo = registrations(&j, false);
    assert_eq!(undo.classic, vec![0], "undoing a drain joins nothing new");
    assert_eq!(undo.target_groups, vec![(0, vec![80, 81])]);
}

#[test]
fn the_auto_gate_probes_the_first_target_group_port_else_classic() {
    let j = journal_with(
        vec![clb("web", true, false, true)],
        vec![
            tgj(&[], &[], false, false),
            tgj(&[8081], &[8081], false, true),
        ],
    );
    let p = probe(&j, "10.0.0.5").unwrap().to_string();
    assert!(p.contains("10.0.0.5:8081"), "{p}");
    let only_classic = journal_with(vec![clb("web", true, false, true)], vec![]);
    let p = probe(&only_classic, "10.0.0.5").unwrap().to_string();
    assert!(p.contains("10.0.0.5:8080"), "{p}");
    let mut none = only_classic.clone();
    none.gate.url = GateTarget::None;
    assert!(probe(&none, "10.0.0.5").is_none());
    assert!(probe(&journal_with(vec![], vec![]), "10.0.0.5").is_none());
}

#[test]
fn gate_settings_come_from_the_section_then_the_health_check() {
    let j = journal_with(vec![], vec![tgj(&[80], &[80], false, true)]);
    let s = gate_settings(&j);
    assert_eq!(s.expect, vec![(200, 299)]);
    assert_eq!(s.successes, 3, "healthy threshold 5, at most 3");
    let mut own = j.clone();
    own.gate.expect = vec![(204, 204)];
    own.gate.successes = Some(1);
    let s = gate_settings(&own);
    assert_eq!((s.expect, s.successes), (vec![(204, 204)], 1));
    let bare = gate_settings(&journal_with(vec![], vec![]));
    assert_eq!((bare.expect, bare.successes), (vec![(200, 399)], 2));
}

#[test]
fn group_journal_values_round_trip() {
    let mut j = journal_with(vec![], vec![]);
    j.group = Some(Group {
        name: "web".into(),
        min_delta: 1,
        ..Group::default()
    });
    let back: Journal = serde_json::from_slice(&serde_json::to_vec(&j).unwrap()).unwrap();
    assert_eq!(back, j);
}

#[test]
fn the_plan_records_what_the_restore_needs_after_a_restart() {
    let lb = lb("  abandonAfter: 600\n  healthTimeout: 90\n  onFailure: keepDrained\n");
    let ids = Ids {
        deployment: "d-1",
        group: "g-1",
        instance: "i-1",
    };
    let j = plan(
        ids,
        &lb,
        None,
        vec![clb("web", true, false, false)],
        vec![],
        1000,
    );
    assert_eq!(j.phase, Phase::Planned);
    assert_eq!((j.drain_started, j.abandon_at), (1000, 1600));
    assert_eq!(j.health_timeout, Some(90));
    assert_eq!(j.on_failure, OnFailure::KeepDrained);
    assert_eq!(
        (
            j.deployment_id.as_str(),
            j.group_id.as_str(),
            j.instance_id.as_str()
        ),
        ("d-1", "g-1", "i-1")
    );
    assert_eq!(
        plan(ids, &self::lb(""), None, vec![], vec![], 0).health_timeout,
        None
    );
}

#[test]
fn the_minimum_goes_back_to_the_operators_not_by_a_delta() {
    // Another host is still in Standby: desired is one short, and so is
    // the minimum until that host is back.
    assert_eq!(
        restore_min(Some(4), Some(4), 1, 3, 3),
        MinPlan {
            set: None,
            clear_record: false,
            short: 1
        }
    );
    // The last host back: the operator's minimum, and the record goes.
    assert_eq!(
        restore_min(Some(4), Some(4), 1, 3, 4),
        MinPlan {
            set: Some(4),
            clear_record: true,
            short: 0
        }
    );
    // Restoring twice (a crash after the raise) changes nothing.
    assert_eq!(restore_min(Some(4), None, 1, 4, 4).set, None);
}

#[test]
fn a_host_that_never_lowered_the_minimum_gives_it_back_from_the_record() {
    // Its Standby used the room another host's lowering made; that host
    // restored first, while this one's Standby held desired down.
    assert_eq!(
        restore_min(None, Some(4), 0, 3, 4),
        MinPlan {
            set: Some(4),
            clear_record: true,
            short: 0
        }
    );
    assert_eq!(
        restore_min(None, None, 0, 3, 4).set,
        None,
        "nothing recorded"
    );
}

#[test]
fn the_minimum_is_never_raised_above_desired_nor_lowered() {
    let p = restore_min(Some(6), Some(6), 2, 2, 4);
    assert_eq!((p.set, p.clear_record, p.short), (Some(4), false, 2));
    let raised_by_operator = restore_min(Some(4), Some(4), 1, 5, 6);
    assert_eq!(raised_by_operator.set, None);
    assert!(raised_by_operator.clear_record);
}

#[test]
fn a_journal_from_before_the_record_gives_back_its_delta() {
    assert_eq!(
        restore_min(None, None, 1, 3, 4),
        MinPlan {
            set: Some(4),
            clear_record: false,
            short: 0
        }
    );
}
