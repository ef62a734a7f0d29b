//! POSIX ACLs written directly as the kernel's extended attributes, with the
//! official agent's completion rules: the owner, group and other entries
//! come from the file's mode, a mask is added when named entries need one,
//! and the same for default (inherited) entries.
//!
//! Writing the attribute needs no `setfacl` binary and no shell quoting, and
//! cannot be misread by a stricter libacl (the official agent's v1 strings
//! were rejected by Debian's setfacl).

use appspec::permissions::{Acl, AclEntry, AclTag};

const VERSION: u32 = 2;
const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const GROUP: u16 = 0x08;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;
const UNDEFINED_ID: u32 = u32::MAX;

pub const ACCESS: &std::ffi::CStr = c"system.posix_acl_access";
pub const DEFAULT: &std::ffi::CStr = c"system.posix_acl_default";

/// Encoded attributes: the access ACL, and the default ACL when any default
/// entry is given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    pub access: Vec<u8>,
    pub default: Option<Vec<u8>>,
}

/// `resolve` maps a named entry to its uid/gid.
pub fn encode(
    acl: &Acl,
    mode: u32,
    resolve: &mut dyn FnMut(&AclEntry) -> Result<u32, String>,
) -> Result<Encoded, String> {
    let bits = |shift: u32| ((mode >> shift) & 7) as u16;
    let mut access: Vec<(u16, u32, u16)> = vec![
        (USER_OBJ, UNDEFINED_ID, bits(6)),
        (GROUP_OBJ, UNDEFINED_ID, bits(3)),
        (OTHER, UNDEFINED_ID, bits(0)),
    ];
    let mut default: Vec<(u16, u32, u16)> = Vec::new();
    let mut access_mask = None;
    let mut default_mask = None;
    let (mut d_user, mut d_group, mut d_other) = (None, None, None);
    let mut access_named = false;
    let mut default_named = false;
    for e in &acl.entries {
        let perm = u16::from(e.perms);
        let named = !e.name.is_empty();
        let (tag, id) = match (e.tag, named) {
            (AclTag::User, true) => (USER, resolve(e)?),
            (AclTag::Group, true) => (GROUP, resolve(e)?),
            (AclTag::User, false) => (USER_OBJ, UNDEFINED_ID),
            (AclTag::Group, false) => (GROUP_OBJ, UNDEFINED_ID),
            (AclTag::Mask, _) => (MASK, UNDEFINED_ID),
            (AclTag::Other, _) => (OTHER, UNDEFINED_ID),
        };
        if e.default {
            match tag {
                USER_OBJ => d_user = Some(perm),
                GROUP_OBJ => d_group = Some(perm),
                OTHER => d_other = Some(perm),
                MASK => default_mask = Some(perm),
                _ => {
                    default_named = true;
                    upsert(&mut default, tag, id, perm);
                }
            }
        } else {
            match tag {
                MASK => access_mask = Some(perm),
                USER | GROUP => {
                    access_named = true;
                    upsert(&mut access, tag, id, perm);
                }
                // Base entries are refused by the appspec parser.
                _ => upsert(&mut access, tag, id, perm),
            }
        }
    }
    if access_named || access_mask.is_some() {
        // Without an explicit mask the official agent uses the group bits.
        access.push((MASK, UNDEFINED_ID, access_mask.unwrap_or(bits(3))));
    }
    let default = if acl.has_default() {
        let dg = d_group.unwrap_or(bits(3));
        default.push((USER_OBJ, UNDEFINED_ID, d_user.unwrap_or(bits(6))));
        default.push((GROUP_OBJ, UNDEFINED_ID, dg));
        default.push((OTHER, UNDEFINED_ID, d_other.unwrap_or(bits(0))));
        if default_named || default_mask.is_some() {
            default.push((MASK, UNDEFINED_ID, default_mask.unwrap_or(dg)));
        }
        Some(to_xattr(default))
    } else {
        None
    };
    Ok(Encoded {
        access: to_xattr(access),
        default,
    })
}

fn upsert(v: &mut Vec<(u16, u32, u16)>, tag: u16, id: u32, perm: u16) {
    match v.iter_mut().find(|(t, i, _)| *t == tag && *i == id) {
        Some(e) => e.2 = perm,
        None => v.push((tag, id, perm)),
    }
}

fn to_xattr(mut entries: Vec<(u16, u32, u16)>) -> Vec<u8> {
    // The kernel requires entries ordered by tag, then id.
    entries.sort_by_key(|(t, i, _)| (*t, *i));
    let mut out = Vec::with_capacity(4 + entries.len() * 8);
    out.extend_from_slice(&VERSION.to_le_bytes());
    for (tag, id, perm) in entries {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    }
    out
}

/// Decode an attribute into `(tag, id, perm)` triples (for tests and logs).
pub fn decode(bytes: &[u8]) -> Vec<(u16, u32, u16)> {
    bytes[4.min(bytes.len())..]
        .chunks_exact(8)
        .map(|c| {
            (
                u16::from_le_bytes([c[0], c[1]]),
                u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
                u16::from_le_bytes([c[2], c[3]]),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(entries: &[&str]) -> Acl {
        Acl {
            entries: entries
                .iter()
                .map(|e| AclEntry::parse(e).unwrap())
                .collect(),
        }
    }

    fn ids(e: &AclEntry) -> Result<u32, String> {
        match e.name.as_str() {
            "alice" => Ok(1001),
            "dev" => Ok(2001),
            other => Err(format!("no such user {other}")),
        }
    }

    #[test]
    fn named_entries_get_base_entries_and_a_mask_from_the_mode() {
        let enc = encode(&acl(&["u:alice:rwx", "g:dev:r-x"]), 0o640, &mut ids).unwrap();
        assert_eq!(
            decode(&enc.access),
            vec![
                (USER_OBJ, UNDEFINED_ID, 6),
                (USER, 1001, 7),
                (GROUP_OBJ, UNDEFINED_ID, 4),
                (GROUP, 2001, 5),
                (MASK, UNDEFINED_ID, 4),
                (OTHER, UNDEFINED_ID, 0)
            ]
        );
        assert_eq!(enc.default, None);
        assert_eq!(&enc.access[..4], &2u32.to_le_bytes());
    }

    #[test]
    fn explicit_mask_and_defaults() {
        let enc = encode(
            &acl(&["u:alice:rwx", "m::rw", "d:u:alice:rwx", "d:g::r"]),
            0o750,
            &mut ids,
        )
        .unwrap();
        assert!(decode(&enc.access).contains(&(MASK, UNDEFINED_ID, 6)));
        let d = decode(enc.default.as_ref().unwrap());
        assert_eq!(
            d,
            vec![
                (USER_OBJ, UNDEFINED_ID, 7),
                (USER, 1001, 7),
                (GROUP_OBJ, UNDEFINED_ID, 4),
                (MASK, UNDEFINED_ID, 4),
                (OTHER, UNDEFINED_ID, 0)
            ]
        );
    }

    #[test]
    fn unknown_names_are_errors() {
        assert!(encode(&acl(&["u:mallory:r"]), 0o644, &mut ids)
            .unwrap_err()
            .contains("mallory"));
    }
}
