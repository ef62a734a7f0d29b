//! `codedeploy-agent validate [PATH]`: lint an appspec, a bundle directory
//! or a bundle archive offline. Beyond the appspec itself, it checks that
//! every script and file source the appspec names is in the bundle.

use std::collections::HashSet;
use std::io;
use std::path::{Component, Path, PathBuf};

use appspec::{AppSpec, Diagnostic, Os, Severity};

use std::os::unix::fs::DirBuilderExt;

use crate::revision::{self, sniff, Sniffed};
use crate::spec::BundleType;

/// Everything `validate` found, in one pass.
pub struct Findings {
    /// The file, as the user knows it.
    pub name: String,
    /// The appspec's errors and warnings, and the bundle's missing scripts
    /// and sources, in document order.
    pub diagnostics: Vec<Diagnostic>,
    /// Errors with no place in the appspec (no appspec, unreadable, an
    /// archive refused).
    pub problems: Vec<String>,
    /// The appspec, when it is valid.
    pub spec: Option<AppSpec>,
}

impl Findings {
    /// How many errors, of both kinds.
    pub fn errors(&self) -> usize {
        self.problems.len()
            + self
                .diagnostics
                .iter()
                .filter(|d| d.severity == Severity::Error)
                .count()
    }

    /// How many warnings.
    pub fn warnings(&self) -> usize {
        self.diagnostics.len() + self.problems.len() - self.errors()
    }
}

/// What a bundle contains, as relative paths (`a/b/c`), plus its appspec
/// (its name in the bundle, and where it is on disk).
struct Bundle {
    entries: HashSet<PathBuf>,
    appspec: Option<(String, PathBuf)>,
}

fn clean(name: &[u8]) -> Option<PathBuf> {
    let p = Path::new(std::str::from_utf8(name).ok()?);
    let mut out = PathBuf::new();
    for c in p.components() {
        if let Component::Normal(n) = c {
            out.push(n);
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// Index the entries of a listing and add every parent directory.
fn with_parents(names: impl IntoIterator<Item = PathBuf>) -> HashSet<PathBuf> {
    let mut set = HashSet::new();
    for n in names {
        let mut p = n.as_path();
        while let Some(parent) = p.parent() {
            if parent.as_os_str().is_empty() || !set.insert(parent.to_path_buf()) {
                break;
            }
            p = parent;
        }
        set.insert(n);
    }
    set
}

/// Which directory is the revision root: "" when the appspec is at the top,
/// else the single top-level directory that holds one.
fn pick_root(entries: &HashSet<PathBuf>, names: &[&str]) -> Option<PathBuf> {
    if names.iter().any(|n| entries.contains(Path::new(n))) {
        return Some(PathBuf::new());
    }
    let nested: Vec<PathBuf> = entries
        .iter()
        .filter(|e| {
            e.components().count() == 2 && names.iter().any(|n| e.file_name() == Some(n.as_ref()))
        })
        .filter_map(|e| e.parent().map(Path::to_path_buf))
        .collect();
    (nested.len() == 1).then(|| nested[0].clone())
}

/// A scratch directory removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> io::Result<Scratch> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!(
            "codedeploy-validate-{}-{nanos}",
            std::process::id()
        ));
        std::fs::DirBuilder::new().mode(0o700).create(&p)?;
        Ok(Scratch(p))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = crate::fsutil::remove_tree(&self.0);
    }
}

/// Unpack an archive bundle exactly as a deployment does (the same checks
/// and bounds, the same unwrapping of one top-level directory, a later
/// entry replacing an earlier one) into `scratch`; returns the revision.
fn unpack_like_a_deployment(
    path: &Path,
    kind: Sniffed,
    names: &[&str],
    scratch: &Scratch,
) -> Result<PathBuf, String> {
    let bundle_type = match kind {
        Sniffed::Zip => BundleType::Zip,
        Sniffed::Gzip => BundleType::Tgz,
        _ => BundleType::Tar,
    };
    let staging = crate::layout::staging_dir(&scratch.0);
    let target = crate::layout::archive_dir(&scratch.0);
    revision::unpack(
        bundle_type,
        path,
        &staging,
        false,
        revision::Limits::default(),
    )
    .and_then(|_| revision::install_archive(&staging, &target, names))
    .map_err(|e| e.to_string())?;
    Ok(target)
}

/// The appspec's text; invalid UTF-8 is named as such.
fn read_dir_bundle(dir: &Path, names: &[&str]) -> io::Result<Bundle> {
    let mut listing = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in std::fs::read_dir(dir.join(&rel))? {
            let e = e?;
            let r = rel.join(e.file_name());
            if e.file_type()?.is_dir() {
                stack.push(r.clone());
            }
            listing.push(r);
        }
    }
    let entries = with_parents(listing);
    let root = pick_root(&entries, names);
    let appspec = match root {
        Some(root) => names
            .iter()
            .map(|n| root.join(n))
            .find(|p| entries.contains(p))
            .map(|p| (p.display().to_string(), dir.join(&p))),
        None => None,
    };
    Ok(Bundle { entries, appspec })
}

/// Lint `path` (default: the current directory).
pub fn validate(path: &Path, appspec_filename: &str) -> io::Result<Findings> {
    let names = appspec::candidates(appspec_filename);
    let shown = path.display().to_string();
    let fail = |name: String, problems: Vec<String>| Findings {
        name,
        diagnostics: Vec::new(),
        problems,
        spec: None,
    };
    let scratch;
    let (dir, root_prefix) = if path.is_dir() {
        (path.to_path_buf(), format!("{shown}/"))
    } else {
        match sniff(path)? {
            Sniffed::Unknown => {
                // A standalone appspec.
                return Ok(match crate::appspec_file::read_text(path, &shown) {
                    Ok(text) => lint(&text, &shown, None),
                    Err(e) => fail(shown, vec![e]),
                });
            }
            kind => {
                scratch = Scratch::new()?;
                match unpack_like_a_deployment(path, kind, &names, &scratch) {
                    Ok(d) => (d, format!("{shown}:")),
                    Err(e) => return Ok(fail(shown, vec![e])),
                }
            }
        }
    };
    let bundle = read_dir_bundle(&dir, &names)?;
    let Some((p, on_disk)) = &bundle.appspec else {
        return Ok(fail(
            shown,
            vec![format!(
                "no {} at the top of the bundle or in a single top-level directory",
                names.join(" or ")
            )],
        ));
    };
    let file = format!("{root_prefix}{p}");
    Ok(match crate::appspec_file::read_text(on_disk, &file) {
        Ok(text) => lint(&text, &file, Some(&bundle)),
        Err(e) => fail(file, vec![e]),
    })
}

/// Check an appspec and, with its bundle, that what it names is there:
/// every problem at once, the bundle's even when the appspec has errors.
fn lint(text: &str, file: &str, bundle: Option<&Bundle>) -> Findings {
    let checked = appspec::check(text, file, Os::Linux);
    let valid = !checked.has_errors();
    let mut diagnostics = checked.diagnostics;
    if let Some(spec) = &checked.spec {
        diagnostics.extend(except_warnings(spec, file));
        if let Some(b) = bundle {
            diagnostics.extend(missing_from_bundle(spec, file, b));
        }
    }
    diagnostics.sort_by_key(|d| d.pos);
    Findings {
        name: file.to_string(),
        diagnostics,
        problems: Vec::new(),
        spec: checked.spec.filter(|_| valid),
    }
}

fn except_warnings(spec: &AppSpec, file: &str) -> Vec<Diagnostic> {
    spec.permissions
        .iter()
        .filter(|p| p.pattern.is_none() && !p.except.is_empty())
        .map(|p| Diagnostic {
            severity: Severity::Warning,
            file: file.to_string(),
            pos: p.pos,
            field: format!("permissions[{}].except", p.index),
            message: "except applies only to names directly inside the object, not deeper (as in the official agent)".into(),
        })
        .collect()
}

/// The scripts and file sources the appspec names that the bundle lacks.
fn missing_from_bundle(spec: &AppSpec, file: &str, b: &Bundle) -> Vec<Diagnostic> {
    let root = b
        .appspec
        .as_ref()
        .and_then(|(p, _)| Path::new(p).parent().map(Path::to_path_buf))
        .unwrap_or_default();
    let has = |rel: &str| {
        let r = clean(rel.as_bytes())
            .map(|r| root.join(r))
            .unwrap_or_else(|| root.clone());
        r.as_os_str().is_empty() || b.entries.contains(&r)
    };
    let error = |pos, field: String, message: String| Diagnostic {
        severity: Severity::Error,
        file: file.to_string(),
        pos,
        field,
        message,
    };
    let mut out = Vec::new();
    for h in &spec.hooks {
        for (i, s) in h.scripts.iter().enumerate() {
            if !has(&s.location) {
                let field = format!("hooks.{}[{i}].location", h.event);
                out.push(error(
                    s.pos,
                    field,
                    format!("script {} is not in the bundle", s.location),
                ));
            }
        }
    }
    for (i, m) in spec.files.iter().enumerate() {
        if !has(&m.source) {
            let field = format!("files[{i}].source");
            out.push(error(
                m.pos,
                field,
                format!("{} is not in the bundle", m.source),
            ));
        }
    }
    out
}

/// The one-line summary of a valid appspec.
pub fn summary(name: &str, spec: &AppSpec) -> String {
    let mut s = format!(
        "{name}: OK: {} file mapping{}, {} hook{} ({} script{}), {} permission rule{}",
        spec.files.len(),
        plural(spec.files.len()),
        spec.hooks.len(),
        plural(spec.hooks.len()),
        spec.script_count(),
        plural(spec.script_count()),
        spec.permissions.len(),
        plural(spec.permissions.len()),
    );
    if let Some(lb) = &spec.load_balancer {
        s.push_str(if lb.is_active() {
            ", loadBalancer: drain"
        } else {
            ", loadBalancer: off"
        });
    }
    s
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
