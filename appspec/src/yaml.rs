//! A YAML reader that keeps the position of every node and resolves plain
//! scalars the way Ruby's Psych does (YAML 1.1).
//!
//! appspec.yml and codedeployagent.yml were written for the Ruby agent, so a
//! value must mean here what it meant there: `timeout: 300` is a number,
//! `version: 0.0` a float, `on`/`off` booleans, `0644` an octal integer.
//! Keeping the source text of every scalar also lets callers look past Psych
//! where Psych is wrong for the user (see `mode` in the permissions module).

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// 1-based line and column in the source text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    /// The line, from 1.
    pub line: u32,
    /// The column, from 1.
    pub column: u32,
}

impl Pos {
    fn from_marker(m: &Marker) -> Pos {
        // yaml-rust2 reports 1-based lines and 0-based columns.
        Pos {
            line: m.line() as u32,
            column: m.col() as u32 + 1,
        }
    }
}

/// What a scalar resolves to under Psych's YAML 1.1 rules.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `~`, `null`, or nothing.
    Null,
    /// A YAML 1.1 boolean (`yes`, `off` ...).
    Bool(bool),
    /// An integer (decimal, octal `0o`/`0`, hexadecimal).
    Int(i64),
    /// A float.
    Float(f64),
    /// A string; its content is [`Scalar::text`].
    Str,
}

/// A scalar: its text and what Psych makes of it.
#[derive(Clone, Debug, PartialEq)]
pub struct Scalar {
    /// The scalar's content as written (after YAML unquoting/folding).
    pub text: String,
    /// Written quoted or as a block scalar, which always makes it a string.
    pub quoted: bool,
    /// The value Psych resolves it to.
    pub value: Value,
}

/// What a node holds.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    /// A scalar.
    Scalar(Scalar),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in document order.
    Map(Vec<(Node, Node)>),
}

/// A YAML node with its position.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Where it starts.
    pub pos: Pos,
    /// What it holds.
    pub kind: Kind,
}

/// A document that is not YAML, or exceeds a bound.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct YamlError {
    /// Where.
    pub pos: Pos,
    /// What is wrong.
    pub message: String,
}

/// Parse the first document of `src` (as Psych's `YAML.load` does).
/// An empty document yields `None`.
pub fn parse(src: &str) -> Result<Option<Node>, YamlError> {
    let src = psych_whitespace(src);
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(&src);
    parser.load(&mut builder, false).map_err(|e| YamlError {
        pos: Pos::from_marker(e.marker()),
        message: e.info().to_string(),
    })?;
    if let Some(err) = builder.error {
        return Err(err);
    }
    Ok(builder.root)
}

/// What libyaml (Psych) accepts and yaml-rust2 does not, made plain: a
/// UTF-8 byte order mark at the start, and tabs as the separation after a
/// mapping key's `:` (`os:\tlinux`). Each such tab becomes one space, so
/// lines and columns stay where they were; tabs inside quoted scalars and
/// comments are left alone.
fn psych_whitespace(src: &str) -> std::borrow::Cow<'_, str> {
    let src = src.strip_prefix('\u{feff}').unwrap_or(src);
    if !src.contains(":\t") {
        return std::borrow::Cow::Borrowed(src);
    }
    let mut out = String::with_capacity(src.len());
    let mut quote: Option<char> = None;
    let mut prev = '\n';
    let mut chars = src.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        match (quote, c) {
            (Some('\''), '\'') | (Some('"'), '"') if prev != '\\' || quote == Some('\'') => {
                quote = None
            }
            (None, '\'' | '"') if " \t:[{,-\n".contains(prev) => quote = Some(c),
            (None, '#') if prev == ' ' || prev == '\t' || prev == '\n' => {
                // A comment: copy to the end of the line.
                for d in chars.by_ref() {
                    out.push(d);
                    if d == '\n' {
                        break;
                    }
                }
                prev = '\n';
                continue;
            }
            (None, ':') => {
                while chars.peek() == Some(&'\t') {
                    chars.next();
                    out.push(' ');
                }
            }
            _ => {}
        }
        prev = c;
    }
    std::borrow::Cow::Owned(out)
}

impl Node {
    /// The pairs, if this is a mapping.
    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.kind {
            Kind::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The items, if this is a sequence.
    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.kind {
            Kind::Seq(s) => Some(s),
            _ => None,
        }
    }

    /// The scalar, if this is one.
    pub fn as_scalar(&self) -> Option<&Scalar> {
        match &self.kind {
            Kind::Scalar(s) => Some(s),
            _ => None,
        }
    }

    /// Is this a null scalar?
    pub fn is_null(&self) -> bool {
        matches!(
            &self.kind,
            Kind::Scalar(Scalar {
                value: Value::Null,
                ..
            })
        )
    }

    /// The scalar as a string key (any scalar; mappings never match).
    pub fn key_text(&self) -> Option<&str> {
        self.as_scalar().map(|s| s.text.as_str())
    }

    /// Value of `key` in a mapping; the last occurrence wins, as in Psych.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .rev()
            .find(|(k, _)| k.key_text() == Some(key))
            .map(|(_, v)| v)
    }

    /// A short description of what the node is, for error messages.
    pub fn describe(&self) -> &'static str {
        match &self.kind {
            Kind::Map(_) => "a mapping",
            Kind::Seq(_) => "a list",
            Kind::Scalar(s) => match s.value {
                Value::Null => "empty",
                Value::Bool(_) => "a boolean",
                Value::Int(_) | Value::Float(_) => "a number",
                Value::Str => "text",
            },
        }
    }

    /// What Ruby's `to_s` gives for this scalar; `None` for collections.
    pub fn ruby_to_s(&self) -> Option<String> {
        let s = self.as_scalar()?;
        Some(match s.value {
            Value::Null => String::new(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => ruby_float_to_s(f),
            Value::Str => s.text.clone(),
        })
    }
}

fn ruby_float_to_s(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else if f.fract() == 0.0 && f.abs() < 1e16 {
        format!("{f:.1}")
    } else {
        format!("{f}")
    }
}

/// Resolve a plain (unquoted) scalar as Psych's ScalarScanner does.
pub fn resolve_plain(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        _ => {}
    }
    let lower = text.to_ascii_lowercase();
    match lower.as_str() {
        "yes" | "true" | "on" => return Value::Bool(true),
        "no" | "false" | "off" => return Value::Bool(false),
        ".inf" | "+.inf" => return Value::Float(f64::INFINITY),
        "-.inf" => return Value::Float(f64::NEG_INFINITY),
        ".nan" => return Value::Float(f64::NAN),
        _ => {}
    }
    if let Some(i) = resolve_int(text) {
        return i;
    }
    if let Some(f) = resolve_float(text) {
        return Value::Float(f);
    }
    Value::Str
}

fn split_sign(text: &str) -> (bool, &str) {
    match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    }
}

fn resolve_int(text: &str) -> Option<Value> {
    let (neg, body) = split_sign(text);
    if body.is_empty() {
        return None;
    }
    let strip = |s: &str| {
        s.chars()
            .filter(|c| *c != '_' && *c != ',')
            .collect::<String>()
    };
    let parsed: Option<i64> = if let Some(bin) = body.strip_prefix("0b") {
        if bin.is_empty() || !bin.chars().all(|c| matches!(c, '0' | '1' | '_' | ',')) {
            return None;
        }
        i64::from_str_radix(&strip(bin), 2).ok()
    } else if let Some(hex) = body.strip_prefix("0x") {
        if hex.is_empty()
            || !hex
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == '_' || c == ',')
        {
            return None;
        }
        i64::from_str_radix(&strip(hex), 16).ok()
    } else if body.len() > 1 && body.starts_with('0') {
        // Psych reads a leading zero as octal: `0644` is 420.
        if !body[1..]
            .chars()
            .all(|c| matches!(c, '0'..='7' | '_' | ','))
        {
            return None;
        }
        i64::from_str_radix(&strip(&body[1..]), 8).ok()
    } else if body.contains(':') {
        resolve_sexagesimal(body)
    } else {
        let first = body.chars().next()?;
        if !first.is_ascii_digit()
            || !body
                .chars()
                .all(|c| c.is_ascii_digit() || c == '_' || c == ',')
        {
            return None;
        }
        strip(body).parse::<i64>().ok()
    };
    // An integer too large for i64 stays text; nothing in an appspec needs it.
    parsed.map(|v| Value::Int(if neg { -v } else { v }))
}

/// YAML 1.1 base 60 (`1:30` is 90), which Psych still honours.
fn resolve_sexagesimal(body: &str) -> Option<i64> {
    let mut parts = body.split(':');
    let head = parts.next()?;
    if head.is_empty() || !head.starts_with(|c: char| c.is_ascii_digit() && c != '0') {
        return None;
    }
    if !head.chars().all(|c| c.is_ascii_digit() || c == '_') {
        return None;
    }
    let mut total: i64 = head.replace('_', "").parse().ok()?;
    for p in parts {
        if p.is_empty() || p.len() > 2 || !p.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let v: i64 = p.parse().ok()?;
        if v > 59 {
            return None;
        }
        total = total.checked_mul(60)?.checked_add(v)?;
    }
    Some(total)
}

fn resolve_float(text: &str) -> Option<f64> {
    let (neg, body) = split_sign(text);
    let (mantissa, exp) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let dot = mantissa.find('.')?;
    let (int_part, frac_part) = (&mantissa[..dot], &mantissa[dot + 1..]);
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    if !int_part.is_empty()
        && (!int_part.starts_with(|c: char| c.is_ascii_digit())
            || !int_part
                .chars()
                .all(|c| c.is_ascii_digit() || c == '_' || c == ','))
    {
        return None;
    }
    if !frac_part.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    if let Some(e) = exp {
        let digits = e.strip_prefix(['-', '+'])?;
        if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
    }
    let cleaned: String = body.chars().filter(|c| *c != '_' && *c != ',').collect();
    let v: f64 = cleaned.parse().ok()?;
    Some(if neg { -v } else { v })
}

enum Frame {
    Seq(Pos, usize, Vec<Node>),
    Map(Pos, usize, Vec<(Node, Node)>, Option<Node>),
}

/// Nodes a document may hold, aliases expanded: far above any honest
/// appspec or configuration, far below what a few hundred bytes of nested
/// aliases (ten anchors of ten aliases each: 10^10 nodes) would make.
pub const MAX_NODES: usize = 200_000;
/// Collections nested deeper than this are refused (dropping and walking a
/// tree is recursive).
pub const MAX_DEPTH: usize = 128;

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    /// `nodes` when each open collection started.
    starts: Vec<usize>,
    /// Each anchor's node and how many nodes it holds.
    anchors: HashMap<usize, (Node, usize)>,
    root: Option<Node>,
    error: Option<YamlError>,
    /// Nodes so far, aliases counted as what they expand to.
    nodes: usize,
}

impl Builder {
    /// Count `n` more nodes; false (and an error at `pos`) past the budget.
    fn spend(&mut self, n: usize, pos: Pos) -> bool {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes <= MAX_NODES {
            return true;
        }
        self.error = Some(YamlError {
            pos,
            message: format!(
                "the document holds more than {MAX_NODES} nodes once its aliases are expanded (an alias bomb?); nothing was expanded further"
            ),
        });
        false
    }

    fn open(&mut self, frame: Frame, pos: Pos) {
        if self.stack.len() >= MAX_DEPTH {
            self.error = Some(YamlError {
                pos,
                message: format!("collections are nested deeper than {MAX_DEPTH}"),
            });
            return;
        }
        if self.spend(1, pos) {
            self.starts.push(self.nodes - 1);
            self.stack.push(frame);
        }
    }

    fn push_node(&mut self, node: Node, anchor: usize, size: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, (node.clone(), size));
        }
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some(Frame::Seq(_, _, items)) => items.push(node),
            Some(Frame::Map(_, _, pairs, pending)) => match pending.take() {
                None => *pending = Some(node),
                Some(key) => pairs.push((key, node)),
            },
        }
    }
}

fn is_str_tag(tag: &Option<Tag>) -> bool {
    matches!(tag, Some(t) if t.suffix == "str" && (t.handle == "tag:yaml.org,2002:" || t.handle == "!!"))
}

/// Psych's merge keys: `<<: *base` copies the keys of `base` that the mapping
/// does not set itself.
fn apply_merges(pairs: Vec<(Node, Node)>) -> Vec<(Node, Node)> {
    if !pairs.iter().any(|(k, _)| is_merge_key(k)) {
        return pairs;
    }
    let mut merged: Vec<(Node, Node)> = Vec::new();
    let mut explicit: Vec<(Node, Node)> = Vec::new();
    for (k, v) in pairs {
        if is_merge_key(&k) {
            let sources: Vec<Node> = match v.kind {
                Kind::Seq(items) => items,
                _ => vec![v],
            };
            for src in sources {
                if let Kind::Map(entries) = src.kind {
                    merged.extend(entries);
                }
            }
        } else {
            explicit.push((k, v));
        }
    }
    merged.retain(|(mk, _)| {
        !explicit
            .iter()
            .any(|(ek, _)| ek.key_text() == mk.key_text())
    });
    merged.extend(explicit);
    merged
}

fn is_merge_key(k: &Node) -> bool {
    matches!(&k.kind, Kind::Scalar(s) if !s.quoted && s.text == "<<")
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        let pos = Pos::from_marker(&mark);
        match ev {
            Event::Scalar(text, style, anchor, tag) => {
                if !self.spend(1, pos) {
                    return;
                }
                let quoted = style != TScalarStyle::Plain;
                let value = if quoted || is_str_tag(&tag) {
                    Value::Str
                } else {
                    resolve_plain(&text)
                };
                let node = Node {
                    pos,
                    kind: Kind::Scalar(Scalar {
                        text,
                        quoted: quoted || is_str_tag(&tag),
                        value,
                    }),
                };
                self.push_node(node, anchor, 1);
            }
            Event::SequenceStart(anchor, _) => self.open(Frame::Seq(pos, anchor, Vec::new()), pos),
            Event::MappingStart(anchor, _) => {
                self.open(Frame::Map(pos, anchor, Vec::new(), None), pos)
            }
            Event::SequenceEnd => {
                let size = self.nodes - self.starts.pop().unwrap_or(0);
                if let Some(Frame::Seq(p, anchor, items)) = self.stack.pop() {
                    // Block collections are announced late; their first
                    // element is where a reader looks for them.
                    let p = items.first().map_or(p, |n| p.min(n.pos));
                    self.push_node(
                        Node {
                            pos: p,
                            kind: Kind::Seq(items),
                        },
                        anchor,
                        size,
                    );
                }
            }
            Event::MappingEnd => {
                let size = self.nodes - self.starts.pop().unwrap_or(0);
                if let Some(Frame::Map(p, anchor, pairs, _)) = self.stack.pop() {
                    let p = pairs.first().map_or(p, |(k, _)| p.min(k.pos));
                    let pairs = apply_merges(pairs);
                    self.push_node(
                        Node {
                            pos: p,
                            kind: Kind::Map(pairs),
                        },
                        anchor,
                        size,
                    );
                }
            }
            Event::Alias(id) => match self.anchors.get(&id).map(|(_, n)| *n) {
                // The budget is spent before the copy is made.
                Some(size) if self.spend(size, pos) => {
                    let node = self.anchors[&id].0.clone();
                    self.push_node(node, 0, size);
                }
                Some(_) => {}
                None => {
                    self.error = Some(YamlError {
                        pos,
                        message: "alias to an unknown anchor".into(),
                    })
                }
            },
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(src: &str) -> Scalar {
        let root = parse(&format!("k: {src}\n")).unwrap().unwrap();
        root.get("k").unwrap().as_scalar().unwrap().clone()
    }

    #[test]
    fn tabs_after_a_key_and_a_byte_order_mark_read_as_psych_reads_them() {
        let root = parse("\u{feff}version: 0.0\nos:\tlinux\nk:\t\t'a:\tb' # c:\td\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            root.get("version").unwrap().as_scalar().unwrap().value,
            Value::Float(0.0)
        );
        assert_eq!(root.get("os").unwrap().as_scalar().unwrap().text, "linux");
        // A tab inside a quoted scalar is content, not separation.
        assert_eq!(root.get("k").unwrap().as_scalar().unwrap().text, "a:\tb");
        let os = root.get("os").unwrap();
        assert_eq!((os.pos.line, os.pos.column), (2, 5));
    }

    #[test]
    fn an_alias_bomb_is_refused_before_it_grows() {
        let mut doc = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            doc.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        assert!(doc.len() < 1000);
        let e = parse(&doc).unwrap_err();
        assert!(e.message.contains("alias bomb"), "{e}");
        assert!(e.pos.line >= 5, "{:?}", e.pos);
        // Aliases within the budget are expanded.
        let ok = parse("a: &a [1, 2]\nb: *a\n").unwrap().unwrap();
        assert_eq!(ok.get("b").unwrap().as_seq().unwrap().len(), 2);
    }

    #[test]
    fn deep_nesting_is_refused() {
        let doc = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(parse(&doc).unwrap_err().message.contains("nested deeper"));
    }

    #[test]
    fn psych_scalar_resolution() {
        assert_eq!(scalar("300").value, Value::Int(300));
        assert_eq!(scalar("0644").value, Value::Int(420));
        assert_eq!(scalar("0644").text, "0644");
        assert_eq!(scalar("'0644'").value, Value::Str);
        assert_eq!(scalar("0.0").value, Value::Float(0.0));
        assert_eq!(scalar("0x1f").value, Value::Int(31));
        assert_eq!(scalar("1_000").value, Value::Int(1000));
        assert_eq!(scalar("1:30").value, Value::Int(90));
        assert_eq!(scalar("-12").value, Value::Int(-12));
        assert_eq!(scalar("yes").value, Value::Bool(true));
        assert_eq!(scalar("Off").value, Value::Bool(false));
        assert_eq!(scalar("~").value, Value::Null);
        assert_eq!(scalar("0844").value, Value::Str);
        assert_eq!(scalar("1.2.3").value, Value::Str);
        assert_eq!(scalar("linux").value, Value::Str);
        assert_eq!(scalar("!!str 12").value, Value::Str);
        assert_eq!(scalar(".5").value, Value::Float(0.5));
    }

    #[test]
    fn ruby_to_s_matches_ruby() {
        let root = parse("a: 0.0\nb: 30\nc: true\nd:\ne: 0644\n")
            .unwrap()
            .unwrap();
        let s = |k: &str| root.get(k).unwrap().ruby_to_s().unwrap();
        assert_eq!(s("a"), "0.0");
        assert_eq!(s("b"), "30");
        assert_eq!(s("c"), "true");
        assert_eq!(s("d"), "");
        assert_eq!(s("e"), "420");
    }

    #[test]
    fn positions_are_one_based() {
        let root = parse("version: 0.0\nhooks:\n  Start:\n    - location: x\n")
            .unwrap()
            .unwrap();
        let loc = root
            .get("hooks")
            .unwrap()
            .get("Start")
            .unwrap()
            .as_seq()
            .unwrap()[0]
            .get("location")
            .unwrap();
        assert_eq!(
            loc.pos,
            Pos {
                line: 4,
                column: 17
            }
        );
        assert_eq!(
            root.get("version").unwrap().pos,
            Pos {
                line: 1,
                column: 10
            }
        );
    }

    #[test]
    fn last_duplicate_key_wins() {
        let root = parse("a: 1\na: 2\n").unwrap().unwrap();
        assert_eq!(root.get("a").unwrap().ruby_to_s().unwrap(), "2");
    }

    #[test]
    fn anchors_aliases_and_merge_keys() {
        let src = "base: &b\n  timeout: 30\n  runas: app\nx:\n  <<: *b\n  timeout: 60\ny: *b\n";
        let root = parse(src).unwrap().unwrap();
        let x = root.get("x").unwrap();
        assert_eq!(x.get("timeout").unwrap().ruby_to_s().unwrap(), "60");
        assert_eq!(x.get("runas").unwrap().ruby_to_s().unwrap(), "app");
        assert_eq!(
            root.get("y")
                .unwrap()
                .get("timeout")
                .unwrap()
                .ruby_to_s()
                .unwrap(),
            "30"
        );
    }

    #[test]
    fn syntax_error_has_position() {
        let err = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.pos.line >= 1, "{err:?}");
        assert!(!err.message.is_empty());
    }

    #[test]
    fn empty_document_is_none() {
        assert!(parse("").unwrap().is_none());
        assert!(parse("# only a comment\n").unwrap().is_none());
    }
}
