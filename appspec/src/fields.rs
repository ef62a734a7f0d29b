//! Small helpers to read typed fields out of YAML nodes while reporting
//! precise diagnostics.

use crate::diag::Sink;
use crate::yaml::{Node, Value};

/// Report keys of `map` that are not in `known`. Inside our own sections a
/// typo would silently change behaviour, so callers choose error or warning.
pub(crate) fn check_keys(map: &Node, path: &str, known: &[&str], sink: &mut Sink, as_error: bool) {
    let Some(pairs) = map.as_map() else { return };
    for (k, _) in pairs {
        let Some(key) = k.key_text() else { continue };
        if known.contains(&key) {
            continue;
        }
        let field = join(path, key);
        let mut msg = format!("unknown key {key:?}");
        if let Some(s) = suggest(key, known) {
            msg.push_str(&format!(" (did you mean {s:?}?)"));
        }
        if as_error {
            sink.error(k.pos, field, msg);
        } else {
            sink.warn(k.pos, field, format!("{msg}; it is ignored"));
        }
    }
}

pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// The name of `known` nearest to `key`, when it is near enough to be a typo.
pub(crate) fn suggest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    let lower = key.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (edit_distance(&lower, &k.to_ascii_lowercase()), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// A scalar rendered as text with Ruby's `to_s`, trimmed. Collections are
/// reported and yield `None`.
pub(crate) fn text(node: &Node, field: &str, sink: &mut Sink) -> Option<String> {
    match node.ruby_to_s() {
        Some(s) => Some(s.trim().to_string()),
        None => {
            sink.error(
                node.pos,
                field,
                format!("expected text, found {}", node.describe()),
            );
            None
        }
    }
}

/// A required non-empty text field.
pub(crate) fn required_text(
    parent: &Node,
    key: &str,
    path: &str,
    sink: &mut Sink,
) -> Option<String> {
    let field = join(path, key);
    match parent.get(key) {
        None => {
            sink.error(parent.pos, field, format!("{key} is required"));
            None
        }
        Some(n) if n.is_null() => {
            sink.error(n.pos, field, format!("{key} is empty"));
            None
        }
        Some(n) => {
            let s = text(n, &field, sink)?;
            if s.is_empty() {
                sink.error(n.pos, field, format!("{key} is empty"));
                return None;
            }
            Some(s)
        }
    }
}

/// A list; `null` is an empty list. Anything else is an error.
pub(crate) fn list<'a>(node: &'a Node, field: &str, sink: &mut Sink) -> Option<&'a [Node]> {
    if node.is_null() {
        return Some(&[]);
    }
    match node.as_seq() {
        Some(items) => Some(items),
        None => {
            sink.error(
                node.pos,
                field,
                format!("expected a list, found {}", node.describe()),
            );
            None
        }
    }
}

/// Whole seconds: an integer, or text of digits. `min` is inclusive.
pub(crate) fn seconds(
    node: &Node,
    field: &str,
    min: u32,
    max: u32,
    sink: &mut Sink,
) -> Option<u32> {
    let v: Option<i64> = match node.as_scalar().map(|s| (&s.value, s.text.trim())) {
        Some((Value::Int(i), _)) => Some(*i),
        Some((Value::Str, t)) if !t.is_empty() && t.chars().all(|c| c.is_ascii_digit()) => {
            t.parse().ok()
        }
        _ => None,
    };
    match v {
        Some(v) if v >= i64::from(min) && v <= i64::from(max) => Some(v as u32),
        Some(v) => {
            sink.error(
                node.pos,
                field,
                format!("{v} is out of range ({min} to {max} seconds)"),
            );
            None
        }
        None => {
            let shown = node.ruby_to_s().unwrap_or_else(|| node.describe().into());
            sink.error(
                node.pos,
                field,
                format!("expected whole seconds, found {shown:?}"),
            );
            None
        }
    }
}

/// One of a fixed set of words.
pub(crate) fn choice<T: Copy>(
    node: &Node,
    field: &str,
    options: &[(&str, T)],
    sink: &mut Sink,
) -> Option<T> {
    let word = node.ruby_to_s();
    // YAML 1.1 turns a plain `off` or `on` into a boolean; take it back.
    let spellings: &[&str] = match node.as_scalar().map(|s| &s.value) {
        Some(Value::Bool(false)) => &["off", "no", "false"],
        Some(Value::Bool(true)) => &["on", "yes", "true"],
        _ => &[],
    };
    if let Some(w) = &word {
        if let Some((_, v)) = options
            .iter()
            .find(|(name, _)| name == w || spellings.contains(name))
        {
            return Some(*v);
        }
    }
    let allowed: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
    sink.error(
        node.pos,
        field,
        format!(
            "expected one of {}, found {}",
            allowed.join(", "),
            word.map(|w| format!("{w:?}"))
                .unwrap_or_else(|| node.describe().into())
        ),
    );
    None
}
