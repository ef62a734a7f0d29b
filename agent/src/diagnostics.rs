//! What a host command reports back: the official error codes and the
//! diagnostics JSON, and the bounded tail of script output it carries.

use std::collections::VecDeque;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ErrorCode {
    Succeeded = 0,
    ScriptMissing = 1,
    ScriptNotExecutable = 2,
    ScriptTimedOut = 3,
    ScriptFailed = 4,
    UnknownError = 5,
    OutputsLeftOpen = 6,
    FailedAfterRestart = 7,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostics {
    pub code: ErrorCode,
    pub script_name: String,
    pub message: String,
    pub log: String,
}

impl Diagnostics {
    pub fn error(
        code: ErrorCode,
        script_name: impl Into<String>,
        message: impl Into<String>,
    ) -> Diagnostics {
        Diagnostics {
            code,
            script_name: script_name.into(),
            message: message.into(),
            log: String::new(),
        }
    }

    pub fn unknown(message: impl Into<String>) -> Diagnostics {
        Diagnostics::error(ErrorCode::UnknownError, "", message)
    }

    pub fn success() -> Diagnostics {
        Diagnostics::error(ErrorCode::Succeeded, "", "Succeeded")
    }

    /// `{"error_code":N,"script_name":...,"message":...,"log":...}`
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "error_code": self.code as u8,
            "script_name": self.script_name,
            "message": self.message,
            "log": self.log,
        })
        .to_string()
    }
}

/// The most recent script output, at most `LIMIT` characters of whole
/// lines: where the error is. (The Ruby agent keeps the same 2048.)
#[derive(Debug, Default)]
pub struct Tail {
    lines: VecDeque<String>,
    chars: usize,
}

impl Tail {
    pub const LIMIT: usize = 2048;

    pub fn push(&mut self, mut line: String) {
        let n = line.chars().count();
        if n >= Self::LIMIT {
            // One enormous line: keep its end rather than nothing.
            line = line.chars().skip(n - (Self::LIMIT - 1)).collect();
            self.lines.clear();
            self.chars = 0;
        }
        self.chars += line.chars().count();
        self.lines.push_back(line);
        while self.chars >= Self::LIMIT {
            let old = self.lines.pop_front().expect("non-empty");
            self.chars -= old.chars().count();
        }
    }

    pub fn text(&self) -> String {
        self.lines.iter().map(String::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape() {
        let d = Diagnostics {
            code: ErrorCode::ScriptFailed,
            script_name: "s.sh".into(),
            message: "m".into(),
            log: "[stdout]x\n".into(),
        };
        let v: serde_json::Value = serde_json::from_str(&d.to_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error_code": 4, "script_name": "s.sh", "message": "m", "log": "[stdout]x\n"})
        );
    }

    #[test]
    fn tail_keeps_the_end_in_whole_lines() {
        let mut t = Tail::default();
        for i in 0..1000 {
            t.push(format!("[stdout]line {i}\n"));
        }
        let text = t.text();
        assert!(text.len() < Tail::LIMIT);
        assert!(text.ends_with("[stdout]line 999\n"));
        assert!(text.starts_with("[stdout]line "));
        let mut t = Tail::default();
        t.push("x".repeat(5000) + "END\n");
        assert!(t.text().ends_with("END\n"));
        assert!(t.text().chars().count() < Tail::LIMIT);
    }
}
