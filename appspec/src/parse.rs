//! From YAML nodes to the typed [`AppSpec`], accepting and rejecting documents
//! as the official agent does, with every problem reported at once.

use crate::diag::{Diagnostic, Errors, Severity, Sink};
use crate::events;
use crate::fields::{check_keys, join, list, required_text, suggest, text};
use crate::load_balancer::{self, Timeout, COMMAND_BUDGET_SECONDS};
use crate::model::*;
use crate::permissions::{Acl, AclEntry, Glob, MlsRange, Mode, SeContext};
use crate::yaml::{self, Node, Pos, Value};

/// A valid appspec and the warnings found on the way.
#[derive(Clone, Debug)]
pub struct Parsed {
    /// The appspec.
    pub spec: AppSpec,
    /// What is accepted but worth fixing.
    pub warnings: Vec<Diagnostic>,
}

const TOP_KEYS: &[&str] = &[
    "version",
    "os",
    "files",
    "file_exists_behavior",
    "permissions",
    "hooks",
    "loadBalancer",
];

/// Parse and validate an appspec. `file` names the document in diagnostics;
/// `host_os` is the operating system of the host that will run it.
pub fn parse(src: &str, file: &str, host_os: Os) -> Result<Parsed, Errors> {
    let (spec, items) = read(src, file, host_os);
    match spec {
        Some(spec) if !items.iter().any(|d| d.severity == Severity::Error) => Ok(Parsed {
            spec,
            warnings: items,
        }),
        _ => {
            let mut errors = items;
            errors.retain(|d| d.severity == Severity::Error);
            errors.sort_by_key(|d| d.pos);
            Err(Errors(errors))
        }
    }
}

/// Everything a check of a document finds, in one pass.
#[derive(Clone, Debug)]
pub struct Checked {
    /// The appspec as far as it could be read (`None` when the document is
    /// not a YAML mapping): what is valid of it, errors or not, for the
    /// checks that look further (a bundle's files).
    pub spec: Option<AppSpec>,
    /// Errors and warnings together, in document order.
    pub diagnostics: Vec<Diagnostic>,
}

impl Checked {
    /// Does any diagnostic refuse the document?
    pub fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error)
    }
}

/// Check a document and report every problem at once, errors and warnings,
/// with the appspec as far as it goes (`validate` uses it; `parse` is the
/// same check, refusing on any error).
pub fn check(src: &str, file: &str, host_os: Os) -> Checked {
    let (spec, mut diagnostics) = read(src, file, host_os);
    diagnostics.sort_by_key(|d| d.pos);
    Checked { spec, diagnostics }
}

fn read(src: &str, file: &str, host_os: Os) -> (Option<AppSpec>, Vec<Diagnostic>) {
    let mut sink = Sink::new(file);
    let root = match yaml::parse(src) {
        Ok(Some(root)) => root,
        Ok(None) => {
            sink.error(Pos { line: 1, column: 1 }, "", "the appspec file is empty");
            return (None, sink.items);
        }
        Err(e) => {
            sink.error(e.pos, "", format!("not valid YAML: {}", e.message));
            return (None, sink.items);
        }
    };
    if root.as_map().is_none() {
        sink.error(
            root.pos,
            "",
            format!(
                "the appspec must be a mapping of keys, found {}",
                root.describe()
            ),
        );
        return (None, sink.items);
    }
    for (k, _) in root.as_map().unwrap_or(&[]) {
        if let Some(key) = k.key_text() {
            if !TOP_KEYS.contains(&key) && key != "resources" {
                sink.warn(
                    k.pos,
                    key,
                    "unknown top-level key; it is ignored (as the official agent ignores it)",
                );
            }
        }
    }
    if let Some(r) = root.get("resources") {
        sink.warn(
            r.pos,
            "resources",
            "resources is for ECS and Lambda deployments; the host agent ignores it",
        );
    }

    check_version(&root, &mut sink);
    let os = check_os(&root, host_os, &mut sink);
    let files = root
        .get("files")
        .map(|n| parse_files(n, &mut sink))
        .unwrap_or_default();
    let file_exists_behavior = root.get("file_exists_behavior").and_then(|n| {
        let s = text(n, "file_exists_behavior", &mut sink)?;
        let feb = FileExistsBehavior::parse(&s);
        if feb.is_none() {
            let hint = FileExistsBehavior::parse(&s.to_ascii_uppercase())
                .map(|f| format!(" (write it in capitals: {})", f.as_str()))
                .unwrap_or_default();
            sink.error(
                n.pos,
                "file_exists_behavior",
                format!("expected DISALLOW, OVERWRITE or RETAIN, found {s:?}{hint}"),
            );
        }
        feb
    });
    let hooks = root
        .get("hooks")
        .map(|n| parse_hooks(n, &mut sink))
        .unwrap_or_default();
    let permissions = match root.get("permissions") {
        Some(n) if os == Os::Windows && !n.is_null() => {
            sink.error(
                n.pos,
                "permissions",
                "permissions are supported only on Linux",
            );
            Vec::new()
        }
        Some(n) => parse_permissions(n, &mut sink),
        None => Vec::new(),
    };
    let load_balancer = root
        .get("loadBalancer")
        .and_then(|n| load_balancer::parse(n, &mut sink));

    let spec = AppSpec {
        os,
        files,
        file_exists_behavior,
        permissions,
        hooks,
        load_balancer,
    };
    check_restore_budget(&spec, &mut sink);
    (Some(spec), sink.items)
}

fn check_version(root: &Node, sink: &mut Sink) {
    let Some(v) = root.get("version") else {
        sink.error(root.pos, "version", "version is required and must be 0.0");
        return;
    };
    match v.as_scalar().map(|s| (&s.value, s.text.as_str())) {
        Some((Value::Float(f), _)) if *f == 0.0 => {}
        Some((Value::Int(0), _)) => {}
        Some((Value::Str, "0.0")) => sink.error(
            v.pos,
            "version",
            "version must be the number 0.0, not the text \"0.0\" (remove the quotes; the official agent rejects it too)",
        ),
        _ => sink.error(
            v.pos,
            "version",
            format!("unsupported version {:?}; the only version is 0.0", v.ruby_to_s().unwrap_or_default()),
        ),
    }
}

fn check_os(root: &Node, host_os: Os, sink: &mut Sink) -> Os {
    let Some(v) = root.get("os") else {
        sink.error(root.pos, "os", "os is required (linux or windows)");
        return host_os;
    };
    let os = match v.ruby_to_s().as_deref() {
        Some("linux") => Os::Linux,
        Some("windows") => Os::Windows,
        other => {
            sink.error(
                v.pos,
                "os",
                format!(
                    "unsupported os {:?}; use linux or windows",
                    other.unwrap_or("")
                ),
            );
            return host_os;
        }
    };
    if os != host_os {
        sink.error(
            v.pos,
            "os",
            format!(
                "this revision is for {}, but this host runs {}",
                os.as_str(),
                host_os.as_str()
            ),
        );
    }
    os
}

fn parse_files(node: &Node, sink: &mut Sink) -> Vec<FileMapping> {
    let mut out = Vec::new();
    for (i, item) in list(node, "files", sink).unwrap_or(&[]).iter().enumerate() {
        let p = format!("files[{i}]");
        if item.as_map().is_none() {
            sink.error(
                item.pos,
                &p,
                format!(
                    "expected a mapping with source and destination, found {}",
                    item.describe()
                ),
            );
            continue;
        }
        check_keys(item, &p, &["source", "destination"], sink, false);
        let source = required_text(item, "source", &p, sink);
        let destination = required_text(item, "destination", &p, sink);
        if let Some(d) = &destination {
            if !d.starts_with('/') {
                let pos = item.get("destination").map(|n| n.pos).unwrap_or(item.pos);
                sink.warn(pos, join(&p, "destination"), "destination is not absolute; it is resolved against the agent's working directory");
            }
        }
        if let (Some(source), Some(destination)) = (source, destination) {
            out.push(FileMapping {
                source,
                destination,
                pos: item.pos,
            });
        }
    }
    out
}

fn parse_hooks(node: &Node, sink: &mut Sink) -> Vec<Hook> {
    let mut hooks: Vec<Hook> = Vec::new();
    if node.is_null() {
        return hooks;
    }
    let Some(pairs) = node.as_map() else {
        sink.error(
            node.pos,
            "hooks",
            format!(
                "expected a mapping of lifecycle events, found {}",
                node.describe()
            ),
        );
        return hooks;
    };
    for (k, v) in pairs {
        let Some(event) = k.key_text().map(str::to_string) else {
            continue;
        };
        let p = format!("hooks.{event}");
        match events::classify(&event) {
            events::EventKind::Hook => {}
            events::EventKind::AgentCommand => sink.warn(
                k.pos,
                &p,
                format!("{event} is done by the agent itself; scripts listed under it never run (use BeforeInstall or AfterInstall)"),
            ),
            events::EventKind::ServiceTraffic => sink.warn(
                k.pos,
                &p,
                format!("{event} is done by the CodeDeploy service; scripts listed under it never run"),
            ),
            events::EventKind::Custom => {
                let standard: Vec<&str> = events::LifecycleEvent::STANDARD
                    .iter()
                    .map(|e| e.as_str())
                    .collect();
                let hint = suggest(&event, &standard)
                    .map(|s| format!(" (did you mean {s:?}?)"))
                    .unwrap_or_default();
                sink.warn(
                    k.pos,
                    &p,
                    format!("{event} is not a standard lifecycle event{hint}; it runs only when a deployment lists it (for example codedeploy-local --events)"),
                )
            }
        }
        let mut scripts = Vec::new();
        for (i, s) in list(v, &p, sink).unwrap_or(&[]).iter().enumerate() {
            if let Some(script) = parse_script(s, &format!("{p}[{i}]"), sink) {
                scripts.push(script);
            }
        }
        let total: u64 = scripts.iter().map(|s| u64::from(s.timeout)).sum();
        if total > u64::from(COMMAND_BUDGET_SECONDS) {
            sink.warn(
                k.pos,
                &p,
                format!("the timeouts of {event} add up to {total} s; CodeDeploy fails a lifecycle event that takes longer than {COMMAND_BUDGET_SECONDS} s"),
            );
        }
        hooks.retain(|h| h.event != event);
        hooks.push(Hook {
            event,
            scripts,
            pos: k.pos,
        });
    }
    hooks
}

fn parse_script(node: &Node, p: &str, sink: &mut Sink) -> Option<Script> {
    if node.as_map().is_none() {
        sink.error(
            node.pos,
            p,
            format!(
                "expected a mapping with location (and optional timeout, runas), found {}",
                node.describe()
            ),
        );
        return None;
    }
    check_keys(
        node,
        p,
        &["location", "timeout", "runas", "sudo"],
        sink,
        false,
    );
    let location = required_text(node, "location", p, sink);
    let runas = node.get("runas").and_then(|n| {
        let s = text(n, &join(p, "runas"), sink)?;
        (!s.is_empty()).then_some(s)
    });
    let sudo = match node
        .get("sudo")
        .map(|n| (n, n.as_scalar().map(|s| &s.value)))
    {
        None => false,
        Some((_, Some(Value::Bool(b)))) => *b,
        Some((_, Some(Value::Null))) => false,
        Some((n, _)) => {
            sink.warn(
                n.pos,
                join(p, "sudo"),
                "sudo should be true or false; any other value counts as true",
            );
            true
        }
    };
    let timeout = match node.get("timeout") {
        None => DEFAULT_SCRIPT_TIMEOUT,
        Some(n) if n.is_null() => DEFAULT_SCRIPT_TIMEOUT,
        Some(n) => script_timeout(n, &join(p, "timeout"), sink)?,
    };
    Some(Script {
        location: location?,
        runas,
        sudo,
        timeout,
        pos: node.pos,
    })
}

/// Ruby's `to_i` on the value, as the official agent reads `timeout`:
/// numbers are truncated, text is read up to its first non-digit.
fn script_timeout(n: &Node, field: &str, sink: &mut Sink) -> Option<u32> {
    let s = n.as_scalar();
    let (v, lenient): (i64, bool) = match s.map(|s| (&s.value, s.text.trim())) {
        Some((Value::Int(i), _)) => (*i, false),
        Some((Value::Float(f), _)) if f.is_finite() => (f.trunc() as i64, f.fract() != 0.0),
        Some((Value::Str, t)) => {
            let digits: String = t.chars().take_while(|c| c.is_ascii_digit()).collect();
            match digits.parse::<i64>() {
                Ok(v) => (v, digits.len() != t.len()),
                Err(_) if !digits.is_empty() => {
                    sink.error(
                        n.pos,
                        field,
                        format!(
                            "timeout {digits} is too large: a script may take at most 3600 seconds"
                        ),
                    );
                    return None;
                }
                Err(_) => (0, true),
            }
        }
        _ => (0, false),
    };
    if v <= 0 {
        sink.error(
            n.pos,
            field,
            format!(
                "timeout must be a positive number of seconds, found {:?}",
                n.ruby_to_s().unwrap_or_default()
            ),
        );
        return None;
    }
    let v = v.min(i64::from(u32::MAX)) as u32;
    if lenient {
        sink.warn(
            n.pos,
            field,
            format!("read as {v} seconds (as the official agent reads it); write a whole number"),
        );
    }
    Some(v)
}

fn parse_permissions(node: &Node, sink: &mut Sink) -> Vec<Permission> {
    let mut out = Vec::new();
    for (index, item) in list(node, "permissions", sink)
        .unwrap_or(&[])
        .iter()
        .enumerate()
    {
        let p = format!("permissions[{index}]");
        if item.as_map().is_none() {
            sink.error(
                item.pos,
                &p,
                format!(
                    "expected a mapping with object (and pattern, owner, mode ...), found {}",
                    item.describe()
                ),
            );
            continue;
        }
        check_keys(
            item,
            &p,
            &[
                "object", "pattern", "except", "type", "owner", "group", "mode", "acls", "context",
            ],
            sink,
            false,
        );
        let object = required_text(item, "object", &p, sink);
        let pattern = match item.get("pattern") {
            None => None,
            Some(n) if n.is_null() => None,
            Some(n) => text(n, &join(&p, "pattern"), sink).and_then(|s| {
                if s.contains('/') {
                    sink.warn(n.pos, join(&p, "pattern"), "a pattern matches names directly inside the object; one with '/' never matches");
                }
                (s != "**").then_some(Glob(s))
            }),
        };
        let mut except = Vec::new();
        if let Some(n) = item.get("except") {
            let f = join(&p, "except");
            for (i, e) in list(n, &f, sink).unwrap_or(&[]).iter().enumerate() {
                if let Some(s) = text(e, &format!("{f}[{i}]"), sink) {
                    except.push(Glob(s));
                }
            }
        }
        let types = match item.get("type") {
            None => Some(ObjectTypes {
                file: true,
                directory: true,
            }),
            Some(n) => object_types(n, &join(&p, "type"), sink),
        };
        let owner = item
            .get("owner")
            .and_then(|n| text(n, &join(&p, "owner"), sink))
            .filter(|s| !s.is_empty());
        let group = item
            .get("group")
            .and_then(|n| text(n, &join(&p, "group"), sink))
            .filter(|s| !s.is_empty());
        let mode = item
            .get("mode")
            .filter(|n| !n.is_null())
            .and_then(|n| mode(n, &join(&p, "mode"), sink));
        let acls = item
            .get("acls")
            .filter(|n| !n.is_null())
            .and_then(|n| acls(n, &join(&p, "acls"), sink));
        let context = item
            .get("context")
            .filter(|n| !n.is_null())
            .and_then(|n| context(n, &join(&p, "context"), sink));
        if let (Some(object), Some(types)) = (object, types) {
            out.push(Permission {
                index,
                object,
                pattern,
                except,
                types,
                owner,
                group,
                mode,
                acls,
                context,
                pos: item.pos,
            });
        }
    }
    out
}

fn object_types(n: &Node, field: &str, sink: &mut Sink) -> Option<ObjectTypes> {
    let Some(items) = n.as_seq() else {
        sink.error(
            n.pos,
            field,
            format!(
                "type must be a list such as [file] or [file, directory], found {}",
                n.describe()
            ),
        );
        return None;
    };
    let mut t = ObjectTypes {
        file: false,
        directory: false,
    };
    for (i, item) in items.iter().enumerate() {
        match item.ruby_to_s().as_deref() {
            Some("file") => t.file = true,
            Some("directory") => t.directory = true,
            other => {
                sink.error(
                    item.pos,
                    format!("{field}[{i}]"),
                    format!(
                        "permissions apply to file or directory, not {:?}",
                        other.unwrap_or_default()
                    ),
                );
                return None;
            }
        }
    }
    Some(t)
}

/// The mode is read from the digits as written. Psych would turn a plain
/// `0644` into the integer 420 and the Ruby agent would then set mode 0420;
/// chmod, the Rust agent and every user reading the file mean 0644, so we
/// follow the text and warn that the Ruby agent disagrees.
fn mode(n: &Node, field: &str, sink: &mut Sink) -> Option<Mode> {
    let Some(s) = n.as_scalar() else {
        sink.error(
            n.pos,
            field,
            format!("expected octal digits such as 644, found {}", n.describe()),
        );
        return None;
    };
    match Mode::parse(&s.text) {
        Ok(m) => {
            if !s.quoted
                && matches!(s.value, Value::Int(_))
                && s.text.len() > 1
                && s.text.starts_with('0')
            {
                sink.warn(
                    n.pos,
                    field,
                    format!(
                        "mode {} is applied as {}; the Ruby agent 1.x reads a plain leading-zero number as octal and would apply {}. Write {} (or quote it) for the same result on every agent",
                        s.text,
                        m.text,
                        Mode::parse(&n.ruby_to_s().unwrap_or_default()).map(|r| r.text).unwrap_or_else(|_| "an invalid mode".into()),
                        s.text.trim_start_matches('0')
                    ),
                );
            }
            Some(m)
        }
        Err(e) => {
            sink.error(n.pos, field, e);
            None
        }
    }
}

fn acls(n: &Node, field: &str, sink: &mut Sink) -> Option<Acl> {
    let Some(items) = n.as_seq() else {
        sink.error(
            n.pos,
            field,
            format!(
                "acls must be a list of entries such as \"u:alice:rwx\", found {}",
                n.describe()
            ),
        );
        return None;
    };
    let mut entries = Vec::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let f = format!("{field}[{i}]");
        let Some(s) = text(item, &f, sink) else {
            ok = false;
            continue;
        };
        match AclEntry::parse(&s) {
            Ok(e) => entries.push(e),
            Err(e) => {
                sink.error(item.pos, f, e);
                ok = false;
            }
        }
    }
    ok.then_some(Acl { entries })
}

fn context(n: &Node, field: &str, sink: &mut Sink) -> Option<SeContext> {
    if n.as_map().is_none() {
        sink.error(
            n.pos,
            field,
            format!(
                "context must be a mapping with type (and optional name, range), found {}",
                n.describe()
            ),
        );
        return None;
    }
    check_keys(n, field, &["name", "type", "range", "role"], sink, false);
    if let Some(r) = n.get("role") {
        sink.warn(
            r.pos,
            join(field, "role"),
            "SELinux roles are not supported; role is ignored (as by the official agent)",
        );
    }
    let type_ = required_text(n, "type", field, sink);
    let user = n
        .get("name")
        .and_then(|v| text(v, &join(field, "name"), sink))
        .filter(|s| !s.is_empty());
    let range = match n.get("range") {
        None => None,
        Some(r) => {
            let s = text(r, &join(field, "range"), sink)?;
            match MlsRange::parse(&s) {
                Ok(range) => Some(range),
                Err(e) => {
                    sink.error(r.pos, join(field, "range"), e);
                    return None;
                }
            }
        }
    };
    Some(SeContext {
        user,
        type_: type_?,
        range,
    })
}

/// The restore runs inside ValidateService, after its scripts, and the
/// command has an hour. A declared worst case beyond it is only a warning
/// (scripts rarely take their whole timeout, and the default timeout is the
/// whole hour): the restore gets what is left of the hour, and the warning
/// names the fix.
fn check_restore_budget(spec: &AppSpec, sink: &mut Sink) {
    let Some(lb) = &spec.load_balancer else {
        return;
    };
    if !lb.is_active() {
        return;
    }
    let scripts: u64 = spec
        .scripts("ValidateService")
        .iter()
        .map(|s| u64::from(s.timeout))
        .sum();
    let gate = u64::from(lb.health_gate.timeout);
    let health = match lb.health_timeout {
        Timeout::Seconds(s) => u64::from(s),
        Timeout::Auto => 0,
    };
    let total = scripts + gate + health;
    if total > u64::from(COMMAND_BUDGET_SECONDS) {
        let room = u64::from(COMMAND_BUDGET_SECONDS).saturating_sub(gate + health + 60);
        sink.warn(
            lb.pos,
            "loadBalancer",
            format!(
                "ValidateService scripts ({scripts} s) plus healthGate.timeout ({gate} s) plus healthTimeout ({health} s) come to {total} s, more than the {COMMAND_BUDGET_SECONDS} s a lifecycle event may take; the restore gets what is left of the hour after the scripts. Give the ValidateService scripts a timeout (at most {room} s in all) so that it always fits"
            ),
        );
    }
}
