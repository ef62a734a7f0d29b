//! `codedeploy-agent validate [PATH]`: lint an appspec, a bundle directory
//! or a bundle archive offline. Beyond the appspec itself, it checks that
//! every script and file source the appspec names is in the bundle.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use appspec::{AppSpec, Diagnostic, Os, Severity};

use crate::revision::{sniff, Sniffed};

pub struct Findings {
    pub name: String,
    pub warnings: Vec<Diagnostic>,
    pub errors: Vec<String>,
    pub spec: Option<AppSpec>,
}

/// What a bundle contains, as relative paths (`a/b/c`), plus its appspec text.
struct Bundle {
    entries: HashSet<PathBuf>,
    appspec: Option<(String, String)>,
}

const MAX_APPSPEC: u64 = 1 << 20;

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
fn pick_root(entries: &HashSet<PathBuf>, names: &[String]) -> Option<PathBuf> {
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

fn read_archive(path: &Path, kind: Sniffed, names: &[String]) -> io::Result<Bundle> {
    let wanted = |p: &Path| {
        p.components().count() <= 2 && names.iter().any(|n| p.file_name() == Some(n.as_ref()))
    };
    let mut found: Vec<(PathBuf, String)> = Vec::new();
    let mut listing = Vec::new();
    match kind {
        Sniffed::Zip => {
            let mut z = zip::ZipArchive::new(BufReader::new(File::open(path)?))
                .map_err(io::Error::other)?;
            for i in 0..z.len() {
                let mut e = z.by_index(i).map_err(io::Error::other)?;
                let Some(rel) = clean(e.name_raw()) else {
                    continue;
                };
                if !e.is_dir() && wanted(&rel) {
                    let mut s = String::new();
                    (&mut e).take(MAX_APPSPEC).read_to_string(&mut s)?;
                    found.push((rel.clone(), s));
                }
                listing.push(rel);
            }
        }
        Sniffed::Gzip | Sniffed::Tar => {
            let f = BufReader::new(File::open(path)?);
            let r: Box<dyn Read> = if kind == Sniffed::Gzip {
                Box::new(flate2::read::MultiGzDecoder::new(f))
            } else {
                Box::new(f)
            };
            let mut ar = tar::Archive::new(r);
            for e in ar.entries()? {
                let mut e = e?;
                let Some(rel) = clean(&e.path_bytes()) else {
                    continue;
                };
                if e.header().entry_type().is_file() && wanted(&rel) {
                    let mut s = String::new();
                    (&mut e).take(MAX_APPSPEC).read_to_string(&mut s)?;
                    found.push((rel.clone(), s));
                }
                listing.push(rel);
            }
        }
        Sniffed::Unknown => return Err(io::Error::other("not an archive")),
    }
    let entries = with_parents(listing);
    let root = pick_root(&entries, names);
    let appspec = root.and_then(|root| {
        names.iter().find_map(|n| {
            let want = root.join(n);
            found
                .iter()
                .find(|(p, _)| *p == want)
                .map(|(p, s)| (p.display().to_string(), s.clone()))
        })
    });
    Ok(Bundle { entries, appspec })
}

fn read_dir_bundle(dir: &Path, names: &[String]) -> io::Result<Bundle> {
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
            .map(|p| {
                let text = std::fs::read_to_string(dir.join(&p)).unwrap_or_default();
                (p.display().to_string(), text)
            }),
        None => None,
    };
    Ok(Bundle { entries, appspec })
}

/// Lint `path` (default: the current directory).
pub fn validate(path: &Path, appspec_filename: &str) -> io::Result<Findings> {
    let names = crate::executor::appspec_names(appspec_filename);
    let shown = path.display().to_string();
    let (bundle, root_prefix, standalone): (Option<Bundle>, String, Option<String>) =
        if path.is_dir() {
            (
                Some(read_dir_bundle(path, &names)?),
                format!("{shown}/"),
                None,
            )
        } else {
            match sniff(path)? {
                Sniffed::Unknown => (None, String::new(), Some(std::fs::read_to_string(path)?)),
                kind => (
                    Some(read_archive(path, kind, &names)?),
                    format!("{shown}:"),
                    None,
                ),
            }
        };
    let (file, text) = match (&bundle, standalone) {
        (_, Some(text)) => (shown.clone(), text),
        (Some(b), None) => match &b.appspec {
            Some((p, t)) => (format!("{root_prefix}{p}"), t.clone()),
            None => {
                return Ok(Findings {
                    name: shown,
                    warnings: Vec::new(),
                    errors: vec![format!(
                        "no {} at the top of the bundle or in a single top-level directory",
                        names.join(" or ")
                    )],
                    spec: None,
                })
            }
        },
        (None, None) => unreachable!("either a bundle or a standalone appspec"),
    };
    let parsed = match appspec::parse(&text, &file, Os::Linux) {
        Ok(p) => p,
        Err(e) => {
            return Ok(Findings {
                name: file,
                warnings: Vec::new(),
                errors: e.0.iter().map(|d| d.to_string()).collect(),
                spec: None,
            })
        }
    };
    let mut warnings = parsed.warnings;
    for p in &parsed.spec.permissions {
        if p.pattern.is_none() && !p.except.is_empty() {
            warnings.push(Diagnostic {
                severity: Severity::Warning,
                file: file.clone(),
                pos: p.pos,
                field: format!("permissions[{}].except", p.index),
                message: "except applies only to names directly inside the object, not deeper (as in the official agent)".into(),
            });
        }
    }
    let mut errors = Vec::new();
    if let Some(b) = &bundle {
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
        for h in &parsed.spec.hooks {
            for (i, s) in h.scripts.iter().enumerate() {
                if !has(&s.location) {
                    errors.push(format!(
                        "{file}:{}:{}: hooks.{}[{i}].location: script {} is not in the bundle",
                        s.pos.line, s.pos.column, h.event, s.location
                    ));
                }
            }
        }
        for (i, m) in parsed.spec.files.iter().enumerate() {
            if !has(&m.source) {
                errors.push(format!(
                    "{file}:{}:{}: files[{i}].source: {} is not in the bundle",
                    m.pos.line, m.pos.column, m.source
                ));
            }
        }
    }
    Ok(Findings {
        name: file,
        warnings,
        errors,
        spec: Some(parsed.spec),
    })
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
