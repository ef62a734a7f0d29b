//! Users and groups from the host's databases (NSS), for `runas` and for the
//! `owner`/`group` of permissions.

use std::collections::HashMap;
use std::ffi::CString;
use std::path::PathBuf;

use nix::unistd::{Gid, Group, User};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Every group the user belongs to, primary included.
    pub groups: Vec<u32>,
    pub home: PathBuf,
    pub shell: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("user {0:?} does not exist on this host")]
    NoUser(String),
    #[error("group {0:?} does not exist on this host")]
    NoGroup(String),
    #[error("cannot look up {what} {name:?}: {source}")]
    Failed {
        what: &'static str,
        name: String,
        source: nix::Error,
    },
}

/// A name, or a number when no such name exists (as chown accepts).
pub fn account(name: &str) -> Result<Account, LookupError> {
    let failed = |source| LookupError::Failed {
        what: "user",
        name: name.into(),
        source,
    };
    let user = match User::from_name(name).map_err(failed)? {
        Some(u) => u,
        None => match name.parse::<u32>() {
            Ok(uid) => User::from_uid(nix::unistd::Uid::from_raw(uid))
                .map_err(failed)?
                .ok_or_else(|| LookupError::NoUser(name.into()))?,
            Err(_) => return Err(LookupError::NoUser(name.into())),
        },
    };
    let cname = CString::new(user.name.clone()).map_err(|_| LookupError::NoUser(name.into()))?;
    let groups = nix::unistd::getgrouplist(&cname, user.gid)
        .map(|g| g.into_iter().map(Gid::as_raw).collect())
        .unwrap_or_else(|_| vec![user.gid.as_raw()]);
    Ok(Account {
        name: user.name,
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        groups,
        home: user.dir,
        shell: user.shell,
    })
}

pub fn group_id(name: &str) -> Result<u32, LookupError> {
    match Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => name
            .parse::<u32>()
            .map_err(|_| LookupError::NoGroup(name.into())),
        Err(source) => Err(LookupError::Failed {
            what: "group",
            name: name.into(),
            source,
        }),
    }
}

/// Name-to-id lookups for archive entries (tar `uname`/`gname`), cached
/// because an archive repeats the same few names thousands of times.
#[derive(Default)]
pub struct IdCache {
    users: HashMap<String, Option<u32>>,
    groups: HashMap<String, Option<u32>>,
}

impl IdCache {
    pub fn uid(&mut self, name: &str) -> Option<u32> {
        if let Some(v) = self.users.get(name) {
            return *v;
        }
        let v = User::from_name(name).ok().flatten().map(|u| u.uid.as_raw());
        self.users.insert(name.to_string(), v);
        v
    }

    pub fn gid(&mut self, name: &str) -> Option<u32> {
        if let Some(v) = self.groups.get(name) {
            return *v;
        }
        let v = Group::from_name(name)
            .ok()
            .flatten()
            .map(|g| g.gid.as_raw());
        self.groups.insert(name.to_string(), v);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_resolves_by_name_and_number() {
        let by_name = account("root").unwrap();
        assert_eq!((by_name.uid, by_name.gid), (0, 0));
        assert!(by_name.groups.contains(&0));
        assert_eq!(account("0").unwrap().name, "root");
        assert!(matches!(
            account("no-such-user-xyz"),
            Err(LookupError::NoUser(_))
        ));
        assert_eq!(group_id("root").unwrap(), 0);
        assert!(matches!(
            group_id("no-such-group-xyz"),
            Err(LookupError::NoGroup(_))
        ));
    }
}
