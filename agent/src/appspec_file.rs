//! The one reader of a revision's appspec: find it under the names
//! `appspec::candidates` gives, in that order, bound its size, read it as
//! UTF-8 and parse it. A host command reads each revision's appspec once:
//! its `Deployment` keeps what it read in a `Cache`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use appspec::{AppSpec, Diagnostic, Os};

use crate::diagnostics::Diagnostics;

/// An appspec read from a revision.
#[derive(Debug)]
pub struct Loaded {
    /// The parsed appspec.
    pub spec: AppSpec,
    /// What the parser warned about; Install logs them, once per deployment.
    pub warnings: Vec<Diagnostic>,
    /// Where it was read.
    pub path: PathBuf,
}

impl Loaded {
    /// The file's name (`appspec.yml`, or what `-A` named), for messages.
    pub fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Log the parser's warnings.
    pub fn log_warnings(&self) {
        for w in &self.warnings {
            tracing::warn!(appspec = %self.path.display(), "{w}");
        }
    }
}

/// The appspec of the revision unpacked at `archive`, if there is one.
pub fn find(archive: &Path, requested: &str) -> Option<PathBuf> {
    appspec::candidates(requested)
        .iter()
        .map(|n| archive.join(n))
        .find(|p| p.is_file())
}

/// An appspec's text: at most `appspec::MAX_APPSPEC_BYTES`, UTF-8. Errors
/// begin with `shown`, the name the user knows the file by.
pub fn read_text(path: &Path, shown: &str) -> Result<String, String> {
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    if size > appspec::MAX_APPSPEC_BYTES {
        return Err(format!(
            "{shown}: {size} bytes; an appspec may be at most {} bytes",
            appspec::MAX_APPSPEC_BYTES
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("{shown}: cannot read: {e}"))?;
    String::from_utf8(bytes).map_err(|e| {
        format!(
            "{shown}: not valid UTF-8 (byte {} is not part of a UTF-8 character); an appspec must be UTF-8 text",
            e.utf8_error().valid_up_to() + 1
        )
    })
}

/// Find, read and parse the appspec of the revision at `archive`.
pub fn load(archive: &Path, requested: &str) -> Result<Loaded, Diagnostics> {
    let Some(path) = find(archive, requested) else {
        return Err(Diagnostics::unknown(format!(
            "The CodeDeploy agent did not find an AppSpec file within the unpacked revision directory at revision-relative path \"{requested}\". The revision was unpacked to directory \"{}\"",
            archive.display()
        )));
    };
    let shown = path.display().to_string();
    let text = read_text(&path, &shown).map_err(Diagnostics::unknown)?;
    let parsed = appspec::parse(&text, &shown, Os::Linux)
        .map_err(|e| Diagnostics::unknown(e.to_string()))?;
    Ok(Loaded {
        spec: parsed.spec,
        warnings: parsed.warnings,
        path,
    })
}

/// The appspecs one host command has read, by revision directory. Shared
/// by the acknowledgement's no-op check and the command's run, which may be
/// on different threads.
#[derive(Debug, Default)]
pub struct Cache(Mutex<Vec<(PathBuf, Arc<Loaded>)>>);

impl Cache {
    /// `load`, once per revision directory; a failure is not kept.
    pub fn get(&self, archive: &Path, requested: &str) -> Result<Arc<Loaded>, Diagnostics> {
        if let Some(hit) = self.lookup(archive) {
            return Ok(hit);
        }
        let loaded = Arc::new(load(archive, requested)?);
        if let Ok(mut v) = self.0.lock() {
            v.push((archive.to_path_buf(), loaded.clone()));
        }
        Ok(loaded)
    }

    fn lookup(&self, archive: &Path) -> Option<Arc<Loaded>> {
        let v = self.0.lock().ok()?;
        v.iter().find(|(p, _)| p == archive).map(|(_, l)| l.clone())
    }

    /// Forget what was read at `archive` (it is being replaced).
    pub fn forget(&self, archive: &Path) {
        if let Ok(mut v) = self.0.lock() {
            v.retain(|(p, _)| p != archive);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_revision_is_read_once_and_a_replaced_one_again() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("appspec.yml");
        std::fs::write(&f, "version: 0.0\nos: linux\n").unwrap();
        let c = Cache::default();
        let a = c.get(d.path(), "appspec.yml").unwrap();
        std::fs::write(
            &f,
            "version: 0.0\nos: linux\nhooks:\n  ApplicationStart:\n    - location: s.sh\n",
        )
        .unwrap();
        let b = c.get(d.path(), "appspec.yml").unwrap();
        assert!(Arc::ptr_eq(&a, &b), "read once");
        c.forget(d.path());
        let again = c.get(d.path(), "appspec.yml").unwrap();
        assert_eq!(again.spec.scripts("ApplicationStart").len(), 1);
        assert_eq!(again.name(), "appspec.yml");
    }

    #[test]
    fn a_missing_or_invalid_appspec_names_the_place() {
        let d = tempfile::tempdir().unwrap();
        let e = load(d.path(), "appspec.yml").unwrap_err();
        assert!(
            e.message.contains("did not find an AppSpec file"),
            "{}",
            e.message
        );
        std::fs::write(d.path().join("appspec.yml"), b"version: 0.0\nos: \xff\n").unwrap();
        let e = load(d.path(), "appspec.yml").unwrap_err();
        assert!(
            e.message.contains("appspec.yml: not valid UTF-8 (byte 18"),
            "{}",
            e.message
        );
    }
}
