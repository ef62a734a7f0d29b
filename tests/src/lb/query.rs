//! The AWS query protocol: form-encoded requests, XML answers and errors.

use std::collections::BTreeMap;

pub type Form = BTreeMap<String, String>;

fn unhex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

pub fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (unhex(b[i + 1]), unhex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn parse_form(body: &[u8]) -> Form {
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

/// `Prefix.member.1`, `Prefix.member.2`, ... in order.
pub fn members(f: &Form, prefix: &str) -> Vec<String> {
    (1..)
        .map_while(|i| f.get(&format!("{prefix}.member.{i}")).cloned())
        .collect()
}

/// `Prefix.member.N.Field` structures as maps of their fields.
pub fn member_structs(f: &Form, prefix: &str) -> Vec<BTreeMap<String, String>> {
    let mut out = Vec::new();
    for i in 1.. {
        let p = format!("{prefix}.member.{i}.");
        let m: BTreeMap<String, String> = f
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(&p).map(|r| (r.to_string(), v.clone())))
            .collect();
        if m.is_empty() {
            break;
        }
        out.push(m);
    }
    out
}

pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `<Name>value</Name>`.
pub fn el(name: &str, v: impl std::fmt::Display) -> String {
    format!("<{name}>{}</{name}>", esc(&v.to_string()))
}

/// `<Name><member>..</member>..</Name>`.
pub fn list<I: IntoIterator<Item = String>>(name: &str, items: I) -> String {
    let mut s = format!("<{name}>");
    for i in items {
        s.push_str("<member>");
        s.push_str(&i);
        s.push_str("</member>");
    }
    s.push_str(&format!("</{name}>"));
    s
}

/// A list page and, when more follow, its continuation token element
/// (`NextToken` for Auto Scaling, `NextMarker` for both ELB APIs).
pub fn page_list<I: IntoIterator<Item = String>>(
    name: &str,
    items: I,
    next: Option<String>,
    token: &str,
) -> String {
    let mut s = list(name, items);
    if let Some(n) = next {
        s.push_str(&el(token, n));
    }
    s
}

pub fn ok(ns: &str, action: &str, result: &str, request_id: &str) -> String {
    format!(
        "<{action}Response xmlns=\"{ns}\"><{action}Result>{result}</{action}Result><ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata></{action}Response>"
    )
}

pub fn error(code: &str, message: &str, request_id: &str, sender: bool) -> String {
    format!(
        "<ErrorResponse><Error><Type>{}</Type><Code>{}</Code><Message>{}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>",
        if sender { "Sender" } else { "Receiver" },
        esc(code),
        esc(message)
    )
}

/// Pagination: `items` from the position `token` names, at most `size`;
/// returns the page and the next token.
pub fn page<T: Clone>(
    items: &[T],
    token: Option<&String>,
    size: usize,
) -> (Vec<T>, Option<String>) {
    let start: usize = token
        .and_then(|t| t.strip_prefix("p-")?.parse().ok())
        .unwrap_or(0);
    let end = (start + size).min(items.len());
    let next = (end < items.len()).then(|| format!("p-{end}"));
    (items.get(start..end).unwrap_or(&[]).to_vec(), next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_and_members() {
        let f = parse_form(b"Action=X&Names.member.1=a%2Fb&Names.member.2=c+d&Targets.member.1.Id=i-1&Targets.member.1.Port=80");
        assert_eq!(members(&f, "Names"), vec!["a/b", "c d"]);
        let t = member_structs(&f, "Targets");
        assert_eq!(t[0]["Id"], "i-1");
        assert_eq!(t[0]["Port"], "80");
        let (p, n) = page(&[1, 2, 3], None, 2);
        assert_eq!((p, n.clone()), (vec![1, 2], Some("p-2".into())));
        assert_eq!(page(&[1, 2, 3], n.as_ref(), 2), (vec![3], None));
    }
}
