use crate::load_balancer::{
    AutoScaling, Breadcrumbs, DrainUntil, HealthGate, LbMode, OnFailure, RestoreTo, Selection,
    StatusRange, TargetGroupId, Timeout,
};
use crate::*;

fn ok(src: &str) -> Parsed {
    match parse(src, "appspec.yml", Os::Linux) {
        Ok(p) => p,
        Err(e) => panic!("expected a valid appspec, got:\n{e}"),
    }
}

fn errs(src: &str) -> Vec<Diagnostic> {
    match parse(src, "appspec.yml", Os::Linux) {
        Ok(_) => panic!("expected errors for:\n{src}"),
        Err(e) => e.0,
    }
}

fn one_err(src: &str) -> Diagnostic {
    let e = errs(src);
    assert_eq!(e.len(), 1, "{e:#?}");
    e.into_iter().next().unwrap()
}

const SEED_1: &str = "version: 0.0
os: linux
files:
  - source: /html
    destination: /var/www/html
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
";

const SEED_2: &str = "version: 0.0
os: linux
files:
  - source: /
    destination: /path/to/install/location
hooks:
  AfterInstall:
    - location: deployment/stop.sh
      runas: user
  ApplicationStart:
    - location: deployment/start.sh
      runas: user
  ValidateService:
    - location: deployment/validate.sh
      runas: user
";

#[test]
fn seed_appspecs_parse() {
    let p = ok(SEED_1);
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    let s = &p.spec;
    assert_eq!(
        s.files,
        vec![FileMapping {
            source: "/html".into(),
            destination: "/var/www/html".into(),
            pos: s.files[0].pos
        }]
    );
    let before = s.scripts("BeforeInstall");
    assert_eq!(before.len(), 2);
    assert_eq!((before[0].timeout, before[0].runas.as_deref()), (400, None));
    assert_eq!(
        (before[1].timeout, before[1].runas.as_deref()),
        (120, Some("root"))
    );
    assert_eq!(s.scripts("ApplicationStart").len(), 2);
    assert!(s.scripts("ValidateService").is_empty());

    let s = ok(SEED_2).spec;
    assert_eq!(s.files[0].source, "/");
    assert_eq!(
        s.scripts("ValidateService")[0].runas.as_deref(),
        Some("user")
    );
    assert_eq!(s.scripts("AfterInstall")[0].timeout, DEFAULT_SCRIPT_TIMEOUT);
}

#[test]
fn version_follows_the_ruby_agent() {
    assert!(parse("version: 0\nos: linux\n", "a", Os::Linux).is_ok());
    let e = one_err("version: \"0.0\"\nos: linux\n");
    assert_eq!((e.pos.line, e.field.as_str()), (1, "version"));
    assert!(e.message.contains("remove the quotes"), "{}", e.message);
    let e = one_err("version: 1.0\nos: linux\n");
    assert!(
        e.message.contains("unsupported version \"1.0\""),
        "{}",
        e.message
    );
    let e = one_err("os: linux\n");
    assert_eq!(e.field, "version");
}

#[test]
fn os_must_match_the_host() {
    let e = one_err("version: 0.0\nos: windows\n");
    assert_eq!((e.pos.line, e.pos.column), (2, 5));
    assert!(e.message.contains("for windows, but this host runs linux"));
    let e = one_err("version: 0.0\nos: Linux\n");
    assert!(e.message.contains("unsupported os \"Linux\""));
}

#[test]
fn errors_name_file_line_column_and_field() {
    let src = "version: 0.0
os: linux
hooks:
  ApplicationStart:
    - location: a.sh
      timeout: soon
    - timeout: 30
files:
  - source: /x
";
    let e = errs(src);
    let shown: Vec<String> = e.iter().map(|d| d.to_string()).collect();
    assert_eq!(e.len(), 3, "{shown:#?}");
    assert_eq!(shown[0], "appspec.yml:6:16: error: hooks.ApplicationStart[0].timeout: timeout must be a positive number of seconds, found \"soon\"");
    assert!(
        shown[1].starts_with(
            "appspec.yml:7:7: error: hooks.ApplicationStart[1].location: location is required"
        ),
        "{}",
        shown[1]
    );
    assert!(
        shown[2]
            .starts_with("appspec.yml:9:5: error: files[0].destination: destination is required"),
        "{}",
        shown[2]
    );
}

#[test]
fn yaml_syntax_errors_have_positions() {
    let e = one_err("version: 0.0\nos: linux\nhooks:\n  ApplicationStart:\n    - location: [a\n");
    assert!(e.message.starts_with("not valid YAML"), "{}", e.message);
    assert!(e.pos.line >= 5, "{e}");
    let e = one_err("");
    assert!(e.message.contains("empty"));
    let e = one_err("- a\n- b\n");
    assert!(e.message.contains("must be a mapping"));
}

#[test]
fn numbers_where_text_is_meant_are_accepted() {
    let src = "version: 0.0
os: linux
hooks:
  AfterInstall:
    - location: 123
      runas: 1000
      timeout: '90'
permissions:
  - object: /srv/app
    owner: 1000
    mode: 755
";
    let s = ok(src).spec;
    let sc = &s.scripts("AfterInstall")[0];
    assert_eq!(
        (sc.location.as_str(), sc.runas.as_deref(), sc.timeout),
        ("123", Some("1000"), 90)
    );
    assert_eq!(s.permissions[0].owner.as_deref(), Some("1000"));
    assert_eq!(s.permissions[0].mode.as_ref().unwrap().bits, 0o755);
}

#[test]
fn timeouts_are_read_like_ruby_to_i() {
    let p = ok("version: 0.0\nos: linux\nhooks:\n  AfterInstall:\n    - location: a\n      timeout: 30.9\n    - location: b\n      timeout: 45s\n");
    let sc = p.spec.scripts("AfterInstall");
    assert_eq!((sc[0].timeout, sc[1].timeout), (30, 45));
    assert_eq!(p.warnings.len(), 2, "{:?}", p.warnings);
    let e = one_err(
        "version: 0.0\nos: linux\nhooks:\n  AfterInstall:\n    - location: a\n      timeout: 0\n",
    );
    assert_eq!(e.field, "hooks.AfterInstall[0].timeout");
}

#[test]
fn octal_looking_modes_follow_the_digits_and_warn() {
    let p = ok("version: 0.0\nos: linux\npermissions:\n  - object: /srv\n    mode: 0644\n  - object: /opt\n    mode: '0640'\n  - object: /tmp/x\n    mode: 4755\n");
    let modes: Vec<u32> = p
        .spec
        .permissions
        .iter()
        .map(|x| x.mode.as_ref().unwrap().bits)
        .collect();
    assert_eq!(modes, vec![0o644, 0o640, 0o4755]);
    assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
    assert!(
        p.warnings[0].message.contains("would apply 420"),
        "{}",
        p.warnings[0].message
    );
    let e = one_err("version: 0.0\nos: linux\npermissions:\n  - object: /srv\n    mode: 0899\n");
    assert_eq!((e.pos.line, e.field.as_str()), (5, "permissions[0].mode"));
    let e = one_err("version: 0.0\nos: linux\npermissions:\n  - object: /srv\n    mode: 77777\n");
    assert!(e.message.contains("digits"), "{}", e.message);
}

#[test]
fn permissions_parse_fully() {
    let src = "version: 0.0
os: linux
permissions:
  - object: test
    pattern: 'prefix*'
    except: ['*ReadMe', '*.tmp']
    type: [file]
    owner: bob
    group: dev
    mode: 6763
    acls:
      - 'u:henry:7'
      - 'd:g:manager:rw'
    context:
      name: user_u
      type: unconfined_t
      range: 's3-s5:c0.c7,c13'
";
    let p = &ok(src).spec.permissions[0];
    assert_eq!(p.pattern.as_ref().unwrap().0, "prefix*");
    assert_eq!(p.except.len(), 2);
    assert!(p.types.file && !p.types.directory);
    assert_eq!(p.mode.as_ref().unwrap().bits, 0o6763);
    assert_eq!(p.acls.as_ref().unwrap().entries.len(), 2);
    let c = p.context.as_ref().unwrap();
    assert_eq!(
        (c.user.as_deref(), c.type_.as_str()),
        (Some("user_u"), "unconfined_t")
    );
    assert_eq!(c.range.as_ref().unwrap().to_string(), "s3-s5:c0.c7,c13");
}

#[test]
fn permission_errors() {
    let e = one_err("version: 0.0\nos: linux\npermissions:\n  - pattern: test\n");
    assert_eq!(e.field, "permissions[0].object");
    let e = one_err("version: 0.0\nos: linux\npermissions:\n  - object: /a\n    type: [socket]\n");
    assert_eq!(
        (e.pos.line, e.field.as_str()),
        (5, "permissions[0].type[0]")
    );
    let e = one_err("version: 0.0\nos: linux\npermissions:\n  - object: /a\n    type: file\n");
    assert!(e.message.contains("must be a list"));
    let e = one_err("version: 0.0\nos: linux\npermissions:\n  - object: /a\n    acls:\n      - 'user:bob:rwxd'\n");
    assert_eq!(
        (e.pos.line, e.field.as_str()),
        (6, "permissions[0].acls[0]")
    );
    let e = one_err(
        "version: 0.0\nos: linux\npermissions:\n  - object: /a\n    context:\n      name: u\n",
    );
    assert_eq!(e.field, "permissions[0].context.type");
    let e = one_err("version: 0.0\nos: linux\npermissions:\n  - object: /a\n    context:\n      type: t\n      range: s5-s3\n");
    assert_eq!(e.field, "permissions[0].context.range");
}

#[test]
fn unknown_keys_warn_and_do_not_fail() {
    let p = ok("version: 0.0\nos: linux\nsomething_else: 1\nhooks:\n  AfterInstall:\n    - location: a\n      tiemout: 3\n");
    let fields: Vec<&str> = p.warnings.iter().map(|w| w.field.as_str()).collect();
    assert_eq!(
        fields,
        vec!["something_else", "hooks.AfterInstall[0].tiemout"]
    );
    assert!(
        p.warnings[1].message.contains("did you mean \"timeout\""),
        "{}",
        p.warnings[1].message
    );
}

#[test]
fn hook_events_are_checked() {
    let p = ok("version: 0.0\nos: linux\nhooks:\n  Install:\n    - location: a\n  HealthCheck:\n    - location: b\n  BeforeInstall:\n");
    assert_eq!(p.warnings.len(), 2, "{:?}", p.warnings);
    assert!(p.warnings[0].message.contains("never run"));
    assert!(p.warnings[1]
        .message
        .contains("not a standard lifecycle event"));
    assert!(p.spec.scripts("BeforeInstall").is_empty());
    let p = ok("version: 0.0\nos: linux\nhooks:\n  AfterInstall:\n    - location: a\n      timeout: 3000\n    - location: b\n      timeout: 1000\n");
    assert!(p.warnings[0].message.contains("add up to 4000 s"));
}

#[test]
fn file_exists_behavior_values() {
    let s = ok("version: 0.0\nos: linux\nfile_exists_behavior: RETAIN\n").spec;
    assert_eq!(s.file_exists_behavior, Some(FileExistsBehavior::Retain));
    let e = one_err("version: 0.0\nos: linux\nfile_exists_behavior: overwrite\n");
    assert!(
        e.message.contains("write it in capitals: OVERWRITE"),
        "{}",
        e.message
    );
    assert_eq!(
        FileExistsBehavior::effective(None, Some(FileExistsBehavior::Overwrite)),
        FileExistsBehavior::Overwrite
    );
    assert_eq!(
        FileExistsBehavior::effective(
            Some(FileExistsBehavior::Retain),
            Some(FileExistsBehavior::Overwrite)
        ),
        FileExistsBehavior::Retain
    );
    assert_eq!(
        FileExistsBehavior::effective(None, None),
        FileExistsBehavior::Disallow
    );
}

const LB_EXAMPLE: &str = "version: 0.0
os: linux
hooks:
  ApplicationStop:
    - location: scripts/stop.sh
  ApplicationStart:
    - location: scripts/start.sh
loadBalancer:
  mode: drain
  autoScaling:
    action: standby
    minSize: lower
    suspendProcesses: [AZRebalance, ScheduledActions]
  classicLoadBalancers: auto
  targetGroups:
    - name: web-tg
      ports: [8080]
    - arn: arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/admin/0123456789abcdef
  drainTimeout: auto
  healthTimeout: auto
  healthGate:
    url: auto
    expectStatus: \"200-399\"
    successes: 3
    interval: 2
    requestTimeout: 2
    timeout: 180
  onFailure: restore
  abandonAfter: 1800
  withServiceTrafficControl: skip
";

#[test]
fn load_balancer_section_parses() {
    let p = ok(LB_EXAMPLE);
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    let lb = p.spec.load_balancer.unwrap();
    assert!(lb.is_active());
    assert_eq!(
        lb.auto_scaling.suspend_processes,
        vec!["AZRebalance", "ScheduledActions"]
    );
    assert_eq!(lb.classic_load_balancers, Selection::Auto);
    let Selection::List(tgs) = &lb.target_groups else {
        panic!()
    };
    assert_eq!(tgs[0].id, TargetGroupId::Name("web-tg".into()));
    assert_eq!(tgs[0].ports, Some(vec![8080]));
    assert!(matches!(tgs[1].id, TargetGroupId::Arn(_)));
    assert_eq!(
        lb.health_gate.expect_status,
        Some(vec![StatusRange {
            low: 200,
            high: 399
        }])
    );
    assert_eq!(lb.health_gate.successes, Some(3));
    assert_eq!(lb.restore_to_for(true), RestoreTo::Declared);
    assert_eq!(lb.restore_to_for(false), RestoreTo::Previous);
}

#[test]
fn drain_until_idle_with_its_quiet_period() {
    let p = ok("version: 0.0\nos: linux\nloadBalancer:\n  drainUntil: idle\n  idleFor: 3\n");
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    let lb = p.spec.load_balancer.unwrap();
    assert_eq!((lb.drain_until, lb.idle_for), (DrainUntil::Idle, 3));
    // A quiet period the default mode ignores says so.
    let p = ok("version: 0.0\nos: linux\nloadBalancer:\n  idleFor: 3\n");
    let w = format!("{:?}", p.warnings);
    assert!(
        w.contains("loadBalancer.idleFor") && w.contains("unless drainUntil is idle"),
        "{w}"
    );
}

#[test]
fn breadcrumbs_take_auto_true_false() {
    let p = ok("version: 0.0\nos: linux\nloadBalancer:\n  autoScaling:\n    breadcrumbs: false\n");
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    assert_eq!(
        p.spec.load_balancer.unwrap().auto_scaling.breadcrumbs,
        Breadcrumbs::Off
    );
}

#[test]
fn load_balancer_defaults() {
    let lb = ok("version: 0.0\nos: linux\nloadBalancer: {}\n")
        .spec
        .load_balancer
        .unwrap();
    assert_eq!(lb.mode, LbMode::Drain);
    assert_eq!(lb.auto_scaling, AutoScaling::default());
    assert_eq!(lb.target_groups, Selection::Auto);
    assert_eq!(lb.drain_timeout, Timeout::Auto);
    assert_eq!((lb.drain_until, lb.idle_for), (DrainUntil::Deregistered, 5));
    assert_eq!(lb.health_gate, HealthGate::default());
    assert_eq!(
        (lb.on_failure, lb.abandon_after),
        (OnFailure::Restore, 1800)
    );
}

#[test]
fn load_balancer_errors_name_line_and_field() {
    let base = "version: 0.0\nos: linux\nloadBalancer:\n";
    let cases: &[(&str, &str, &str)] = &[
        ("  mode: drian\n", "loadBalancer.mode", "expected one of drain, off"),
        ("  autoScaling:\n    suspendProcesses: [Launch]\n", "loadBalancer.autoScaling.suspendProcesses[0]", "cannot be suspended"),
        ("  autoScaling:\n    suspendProcesses: [AZRebalanse]\n", "loadBalancer.autoScaling.suspendProcesses[0]", "unknown Auto Scaling process"),
        ("  targetGroups:\n    - name: a\n      arn: arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/a/1\n", "loadBalancer.targetGroups[0]", "not both"),
        ("  targetGroups:\n    - name: a\n      ports: [0]\n", "loadBalancer.targetGroups[0].ports[0]", "1 to 65535"),
        ("  targetGroups:\n    - name: a\n      ports: [70000]\n", "loadBalancer.targetGroups[0].ports[0]", "1 to 65535"),
        ("  targetGroups:\n    - arn: arn:aws:ec2:x\n", "loadBalancer.targetGroups[0].arn", "not a target group ARN"),
        ("  drainTimeout: 7200\n", "loadBalancer.drainTimeout", "out of range"),
        ("  drainTimout: 30\n", "loadBalancer.drainTimout", "did you mean \"drainTimeout\""),
        ("  healthGate:\n    expectStatus: '399-200'\n", "loadBalancer.healthGate.expectStatus", "empty range"),
        ("  healthGate:\n    url: ftp://x\n", "loadBalancer.healthGate.url", "not auto, none"),
        ("  onFailure: keep\n", "loadBalancer.onFailure", "restoreIfHealthy"),
        ("  drainUntil: quiet\n", "loadBalancer.drainUntil", "expected one of deregistered, idle"),
        ("  drainUntil: idle\n  idleFor: 0\n", "loadBalancer.idleFor", "out of range"),
    ];
    for (section, field, msg) in cases {
        let e = one_err(&format!("{base}{section}"));
        assert_eq!(e.field, *field, "{section}");
        assert!(e.message.contains(msg), "{section}: {}", e.message);
        assert!(e.pos.line >= 4, "{section}: {e}");
    }
}

#[test]
fn a_restore_beyond_the_command_budget_is_a_warning_that_names_the_fix() {
    // The default script timeout is the whole hour: such an appspec must
    // still deploy, its restore bounded by what is left of the hour.
    let src = "version: 0.0\nos: linux\nhooks:\n  ValidateService:\n    - location: v.sh\n      timeout: 3500\nloadBalancer:\n  healthGate:\n    timeout: 180\n";
    let p = ok(src);
    assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
    let w = &p.warnings[0];
    assert_eq!(w.severity, Severity::Warning);
    assert_eq!((w.pos.line, w.field.as_str()), (8, "loadBalancer"));
    assert!(w.message.contains("3680 s"), "{}", w.message);
    assert!(w.message.contains("at most 3360 s"), "{}", w.message);
    let default = ok("version: 0.0\nos: linux\nhooks:\n  ValidateService:\n    - location: v.sh\nloadBalancer:\n  mode: drain\n");
    assert_eq!(default.warnings.len(), 1, "{:?}", default.warnings);
    // Turned off, the section costs nothing.
    assert!(ok(&format!("{src}  mode: off\n")).warnings.is_empty());
}

#[test]
fn the_official_agent_ignores_our_section_and_so_do_unknown_keys() {
    // A revision with our section is still a valid official appspec: the
    // section is a top-level key the Ruby agent does not read. Keys we do
    // not know at the top level are warnings, never errors.
    let p = ok(&format!("{LB_EXAMPLE}futureFeature:\n  x: 1\n"));
    assert_eq!(p.warnings.len(), 1);
    assert_eq!(p.warnings[0].severity, Severity::Warning);
}

#[test]
fn appspec_candidates_follow_the_official_order() {
    assert_eq!(
        crate::candidates("appspec.yml"),
        ["appspec.yml", "appspec.yaml"]
    );
    assert_eq!(
        crate::candidates("deploy.yml"),
        ["deploy.yml", "appspec.yaml", "appspec.yml"]
    );
    assert_eq!(
        crate::candidates("appspec.yaml"),
        ["appspec.yaml", "appspec.yml"]
    );
}

#[test]
fn check_reports_errors_and_warnings_together_with_what_could_be_read() {
    let src = "version: 0.0\nos: linux\nfiles:\n  - source: /\n    destinaton: /srv\n  - source: /web\n    destination: /var/www\nhooks:\n  AfterInstal:\n    - location: a.sh\n";
    let c = crate::check(src, "appspec.yml", Os::Linux);
    assert!(c.has_errors());
    let shown: Vec<String> = c.diagnostics.iter().map(|d| d.to_string()).collect();
    assert_eq!(shown.len(), 3, "{shown:#?}");
    assert!(shown[0].contains(":4:5: error: files[0].destination: destination is required"));
    assert!(
        shown[1].contains("(did you mean \"destination\"?)"),
        "{}",
        shown[1]
    );
    assert!(
        shown[2].contains("(did you mean \"AfterInstall\"?)"),
        "{}",
        shown[2]
    );
    let spec = c.spec.expect("what is valid of it");
    assert_eq!(spec.files.len(), 1, "the valid mapping is kept");
    assert_eq!(spec.scripts("AfterInstal").len(), 1);
    // parse refuses the same document, with its errors alone.
    assert_eq!(parse(src, "appspec.yml", Os::Linux).unwrap_err().0.len(), 1);
    assert!(crate::check("- a\n", "appspec.yml", Os::Linux)
        .spec
        .is_none());
}
