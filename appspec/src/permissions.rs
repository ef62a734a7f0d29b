//! The value types of a `permissions` entry: mode, ACL entries, SELinux
//! context, and the simple glob used by `pattern` and `except`.

use std::fmt;

/// A permission mode: one to four octal digits, as chmod reads them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mode {
    /// The permission bits, as octal `mode` gives them.
    pub bits: u32,
    /// Normalised to at least three digits, as the official install.json shows it.
    pub text: String,
}

impl Mode {
    /// Parse the digits as written. `Err` carries the reason.
    pub fn parse(written: &str) -> Result<Mode, String> {
        let mut text = written.trim().to_string();
        if text.is_empty() {
            return Err("mode is empty".into());
        }
        while text.len() < 3 {
            text.insert(0, '0');
        }
        if text.len() > 4 {
            return Err(format!(
                "mode {written} has {} digits; a mode has one to four octal digits (e.g. 644 or 2775)",
                text.len()
            ));
        }
        if let Some(bad) = text.chars().find(|c| !('0'..='7').contains(c)) {
            return Err(format!(
                "mode {written} contains {bad:?}, which is not an octal digit (0-7)"
            ));
        }
        let bits = u32::from_str_radix(&text, 8).map_err(|e| e.to_string())?;
        Ok(Mode { bits, text })
    }
}

/// Whom an ACL entry is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AclTag {
    /// A user (`u:`).
    User,
    /// A group (`g:`).
    Group,
    /// The mask (`m:`).
    Mask,
    /// Everyone else (`o:`).
    Other,
}

impl AclTag {
    /// The tag as `setfacl` writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            AclTag::User => "user",
            AclTag::Group => "group",
            AclTag::Mask => "mask",
            AclTag::Other => "other",
        }
    }
}

/// Read, write and execute as the bits 4, 2, 1.
pub type AclPerms = u8;

/// One ACL entry of a `permissions` object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AclEntry {
    /// A default entry (`d:`), inherited by new files of a directory.
    pub default: bool,
    /// Whom it is for.
    pub tag: AclTag,
    /// Empty for the owning user/group entries, and always for mask/other.
    pub name: String,
    /// What it grants.
    pub perms: AclPerms,
}

impl AclEntry {
    /// Parse one entry with the official agent's grammar:
    /// `[d[efault]:][u[ser]|g[roup]|m[ask]|o[ther]:][name]:perms`, where perms is
    /// `rwx`-style (with `-`) or one octal digit. Base entries without a name
    /// are refused (the mode sets those), as the official agent does.
    pub fn parse(ace: &str) -> Result<AclEntry, String> {
        let invalid = || format!("invalid ACL entry {ace:?}");
        let parts: Vec<&str> = ace.split(':').rev().collect();
        if parts.len() < 2 || parts.len() > 4 {
            return Err(invalid());
        }
        let mut default = false;
        let mut tag: Option<AclTag> = None;
        let mut name = String::new();
        if parts.len() == 4 {
            if !matches!(parts[3], "d" | "default") {
                return Err(invalid());
            }
            default = true;
        }
        if parts.len() >= 3 {
            match parts[2] {
                "d" | "default" => {
                    if default {
                        return Err(invalid());
                    }
                    default = true;
                }
                "m" | "mask" => tag = Some(AclTag::Mask),
                "o" | "other" => tag = Some(AclTag::Other),
                "g" | "group" => tag = Some(AclTag::Group),
                "u" | "user" => tag = Some(AclTag::User),
                _ => return Err(invalid()),
            }
        }
        match parts[1] {
            "m" | "mask" if tag.is_none() => tag = Some(AclTag::Mask),
            "o" | "other" if tag.is_none() => tag = Some(AclTag::Other),
            "m" | "mask" => name = "mask".into(),
            "o" | "other" => name = "other".into(),
            other => {
                if tag.is_none() {
                    tag = Some(AclTag::User);
                }
                name = other.to_string();
            }
        }
        let tag = tag.unwrap_or(AclTag::User);
        if matches!(tag, AclTag::Mask | AclTag::Other) && !name.is_empty() {
            return Err(invalid());
        }
        if !default && tag != AclTag::Mask && name.is_empty() {
            return Err(format!(
                "ACL entry {ace:?} sets a base entry; use mode for the owner, group and other bits"
            ));
        }
        let perms = parse_perms(parts[0])
            .map_err(|c| format!("ACL entry {ace:?} contains {c:?}, which is not one of r, w, x, - or an octal digit"))?;
        Ok(AclEntry {
            default,
            tag,
            name,
            perms,
        })
    }
}

fn parse_perms(s: &str) -> Result<AclPerms, char> {
    let mut chars = s.chars();
    if let (Some(c @ '0'..='7'), None) = (chars.clone().next(), chars.clone().nth(1)) {
        return Ok(c as u8 - b'0');
    }
    let mut p = 0;
    for c in chars.by_ref() {
        match c {
            'r' => p |= 4,
            'w' => p |= 2,
            'x' => p |= 1,
            '-' => {}
            other => return Err(other),
        }
    }
    Ok(p)
}

impl fmt::Display for AclEntry {
    /// `[default:]tag:name:rwx`, the form the official install.json records.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.default {
            f.write_str("default:")?;
        }
        let bit = |b: u8, c: char| if self.perms & b != 0 { c } else { '-' };
        write!(
            f,
            "{}:{}:{}{}{}",
            self.tag.as_str(),
            self.name,
            bit(4, 'r'),
            bit(2, 'w'),
            bit(1, 'x')
        )
    }
}

/// The ACL a `permissions` object sets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acl {
    /// Its entries, in the appspec's order.
    pub entries: Vec<AclEntry>,
}

impl Acl {
    /// Does it set default entries?
    pub fn has_default(&self) -> bool {
        self.entries.iter().any(|e| e.default)
    }
}

/// An MLS range `s0[-s3][:c0.c5,c9]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MlsRange {
    /// The low sensitivity level.
    pub low: u32,
    /// The high sensitivity level.
    pub high: u32,
    /// Sorted, distinct category numbers (0..=1023).
    pub categories: Option<Vec<u16>>,
}

impl MlsRange {
    /// `s0`, `s0-s3` as SELinux writes them.
    pub fn parse(range: &str) -> Result<MlsRange, String> {
        let (sens, cats) = match range.split_once(':') {
            Some((s, c)) => (s, Some(c)),
            None => (range, None),
        };
        let nonempty = |p: &str| {
            if p.is_empty() {
                Err(format!("invalid range part {range:?}"))
            } else {
                Ok(())
            }
        };
        nonempty(sens)?;
        let (low, high) = match sens.split_once('-') {
            Some((l, h)) => {
                nonempty(l)?;
                nonempty(h)?;
                (sensitivity(l)?, sensitivity(h)?)
            }
            None => {
                let s = sensitivity(sens)?;
                (s, s)
            }
        };
        if high < low {
            return Err(format!(
                "range {range:?} has its high sensitivity below its low one"
            ));
        }
        let categories = match cats {
            None => None,
            Some(c) => {
                nonempty(c)?;
                let mut all = Vec::new();
                for part in c.split(',') {
                    match part.split_once('.') {
                        Some((a, b)) => {
                            let (a, b) = (category(a)?, category(b)?);
                            if b < a {
                                return Err(format!("invalid category range {part:?}"));
                            }
                            all.extend(a..=b);
                        }
                        None => all.push(category(part)?),
                    }
                }
                let n = all.len();
                all.sort_unstable();
                all.dedup();
                if all.len() != n {
                    return Err(format!("range {range:?} lists a category twice"));
                }
                Some(all)
            }
        };
        Ok(MlsRange {
            low,
            high,
            categories,
        })
    }
}

fn sensitivity(s: &str) -> Result<u32, String> {
    let digits = s
        .strip_prefix('s')
        .filter(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()));
    digits
        .and_then(|d| d.parse().ok())
        .ok_or_else(|| format!("invalid sensitivity {s:?}"))
}

fn category(s: &str) -> Result<u16, String> {
    let digits = s
        .strip_prefix('c')
        .filter(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()));
    match digits.and_then(|d| d.parse::<u32>().ok()) {
        Some(v) if v <= 1023 => Ok(v as u16),
        _ => Err(format!("invalid category {s:?} (c0 to c1023)")),
    }
}

impl fmt::Display for MlsRange {
    /// The canonical form, with runs of categories folded (`c0.c7,c13`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}", self.low)?;
        if self.high != self.low {
            write!(f, "-s{}", self.high)?;
        }
        if let Some(cats) = &self.categories {
            f.write_str(":")?;
            let mut i = 0;
            while i < cats.len() {
                if i > 0 {
                    f.write_str(",")?;
                }
                let start = cats[i];
                let mut end = start;
                while i + 1 < cats.len() && cats[i + 1] == end + 1 {
                    i += 1;
                    end = cats[i];
                }
                if start == end {
                    write!(f, "c{start}")?;
                } else {
                    write!(f, "c{start}.c{end}")?;
                }
                i += 1;
            }
        }
        Ok(())
    }
}

/// The SELinux context a `permissions` object sets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeContext {
    /// The SELinux user, when given.
    pub user: Option<String>,
    /// The type (required).
    pub type_: String,
    /// The MLS range, when given.
    pub range: Option<MlsRange>,
}

/// A glob of literal characters and `*`, matched against one path
/// component, as the official agent matches `pattern` and `except`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob(pub String);

impl Glob {
    /// Does `name` (a single component, no `/`) match? Linear in practice:
    /// one backtrack point, no recursion.
    pub fn matches(&self, name: &[u8]) -> bool {
        if name.contains(&b'/') {
            return false;
        }
        let p = self.0.as_bytes();
        let (mut pi, mut ni) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while ni < name.len() {
            if pi < p.len() && p[pi] == b'*' {
                star = Some((pi, ni));
                pi += 1;
            } else if pi < p.len() && p[pi] == name[ni] {
                pi += 1;
                ni += 1;
            } else if let Some((sp, sn)) = star {
                pi = sp + 1;
                ni = sn + 1;
                star = Some((sp, sn + 1));
            } else {
                return false;
            }
        }
        while pi < p.len() && p[pi] == b'*' {
            pi += 1;
        }
        pi == p.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(Mode::parse("644").unwrap().bits, 0o644);
        assert_eq!(Mode::parse("0644").unwrap().bits, 0o644);
        assert_eq!(Mode::parse("6763").unwrap().bits, 0o6763);
        assert_eq!(Mode::parse("7").unwrap().text, "007");
        assert!(Mode::parse("888")
            .unwrap_err()
            .contains("not an octal digit"));
        assert!(
            Mode::parse("12345").unwrap_err().contains("five") || Mode::parse("12345").is_err()
        );
        assert!(Mode::parse("u+x").is_err());
    }

    #[test]
    fn acl_entries_follow_the_official_grammar() {
        let e = AclEntry::parse("u:henry:7").unwrap();
        assert_eq!(
            (e.default, e.tag, e.name.as_str(), e.perms),
            (false, AclTag::User, "henry", 7)
        );
        let e = AclEntry::parse("d:g:manager:rw").unwrap();
        assert_eq!(
            (e.default, e.tag, e.name.as_str(), e.perms),
            (true, AclTag::Group, "manager", 6)
        );
        let e = AclEntry::parse("d:bob:rwx").unwrap();
        assert_eq!(
            (e.default, e.tag, e.name.as_str()),
            (true, AclTag::User, "bob")
        );
        let e = AclEntry::parse("default::rw").unwrap();
        assert_eq!(
            (e.default, e.tag, e.name.as_str()),
            (true, AclTag::User, "")
        );
        let e = AclEntry::parse("m::7").unwrap();
        assert_eq!((e.tag, e.perms), (AclTag::Mask, 7));
        let e = AclEntry::parse("u:mask:7").unwrap();
        assert_eq!((e.tag, e.name.as_str()), (AclTag::User, "mask"));
        for bad in [
            "7",
            "d:u:bob:7:rwx",
            "invalid:u:bob:7",
            "d:d:bob:7",
            "mask:name:rwx",
            "d:other:name:rwx",
        ] {
            assert!(AclEntry::parse(bad).is_err(), "{bad}");
        }
        assert!(AclEntry::parse("user:bob:rwxd")
            .unwrap_err()
            .contains("'d'"));
        assert!(AclEntry::parse("u::rwx").unwrap_err().contains("use mode"));
        assert_eq!(
            AclEntry::parse("d:g:dev:5").unwrap().to_string(),
            "default:group:dev:r-x"
        );
    }

    #[test]
    fn mls_ranges() {
        let r = MlsRange::parse("s3-s5:c0.c7,c13").unwrap();
        assert_eq!((r.low, r.high), (3, 5));
        assert_eq!(r.categories.as_ref().unwrap().len(), 9);
        assert_eq!(r.to_string(), "s3-s5:c0.c7,c13");
        assert_eq!(MlsRange::parse("s0").unwrap().to_string(), "s0");
        assert!(MlsRange::parse("s5-s3").is_err());
        assert!(MlsRange::parse("s0:c1,c1").is_err());
        assert!(MlsRange::parse("s0:c1024").is_err());
        assert!(MlsRange::parse("x0").is_err());
        assert!(MlsRange::parse("s0:").is_err());
    }

    #[test]
    fn globs_match_one_component() {
        let g = Glob("prefix*".into());
        assert!(g.matches(b"prefix"));
        assert!(g.matches(b"prefix_matches"));
        assert!(!g.matches(b"not_prefix"));
        assert!(!g.matches(b"prefix/x"));
        let g = Glob("*.tmp".into());
        assert!(g.matches(b"this.tmp"));
        assert!(!g.matches(b"this.tmpx"));
        assert!(Glob("*".into()).matches(b""));
        assert!(Glob("a*b*c".into()).matches(b"aXXbYYc"));
        assert!(!Glob("a*b*c".into()).matches(b"aXXbYY"));
        // Adversarial input stays fast: one backtrack point.
        let long = vec![b'a'; 10_000];
        assert!(!Glob("*a*a*a*a*a*b".into()).matches(&long));
    }
}
