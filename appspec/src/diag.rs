//! Diagnostics that name the file, the line and column, and the field.

use std::fmt;

use crate::yaml::Pos;

/// How bad a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The document is accepted; the diagnostic says what to fix.
    Warning,
    /// The document is refused.
    Error,
}

/// One problem found in an appspec, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// Whether the document is refused.
    pub severity: Severity,
    /// The appspec file as the user knows it (e.g. `appspec.yml`, or
    /// `bundle.zip:appspec.yml` for a file inside an archive).
    pub file: String,
    /// The line and column.
    pub pos: Pos,
    /// Dotted path of the field, e.g. `hooks.ApplicationStart[0].timeout`.
    pub field: String,
    /// What is wrong, in words.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(
            f,
            "{}:{}:{}: {sev}: ",
            self.file, self.pos.line, self.pos.column
        )?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// Every error of a document that failed validation (never empty).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct Errors(pub Vec<Diagnostic>);

impl fmt::Display for Errors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// Collects diagnostics while a document is checked.
pub(crate) struct Sink {
    pub file: String,
    pub items: Vec<Diagnostic>,
}

impl Sink {
    pub fn new(file: &str) -> Sink {
        Sink {
            file: file.to_string(),
            items: Vec::new(),
        }
    }

    pub fn error(&mut self, pos: Pos, field: impl Into<String>, message: impl Into<String>) {
        self.push(Severity::Error, pos, field.into(), message.into());
    }

    pub fn warn(&mut self, pos: Pos, field: impl Into<String>, message: impl Into<String>) {
        self.push(Severity::Warning, pos, field.into(), message.into());
    }

    fn push(&mut self, severity: Severity, pos: Pos, field: String, message: String) {
        self.items.push(Diagnostic {
            severity,
            file: self.file.clone(),
            pos,
            field,
            message,
        });
    }
}
