//! The typed appspec, as the install planner and hook runner consume it.

use crate::load_balancer::LoadBalancer;
use crate::permissions::{Acl, Glob, Mode, SeContext};
use crate::yaml::Pos;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Os {
    Linux,
    Windows,
}

impl Os {
    pub fn as_str(self) -> &'static str {
        match self {
            Os::Linux => "linux",
            Os::Windows => "windows",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileExistsBehavior {
    Disallow,
    Overwrite,
    Retain,
}

impl FileExistsBehavior {
    pub fn parse(s: &str) -> Option<FileExistsBehavior> {
        match s {
            "DISALLOW" => Some(FileExistsBehavior::Disallow),
            "OVERWRITE" => Some(FileExistsBehavior::Overwrite),
            "RETAIN" => Some(FileExistsBehavior::Retain),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FileExistsBehavior::Disallow => "DISALLOW",
            FileExistsBehavior::Overwrite => "OVERWRITE",
            FileExistsBehavior::Retain => "RETAIN",
        }
    }

    /// The official precedence: the appspec's own setting, then the
    /// deployment's override, then DISALLOW.
    pub fn effective(
        appspec: Option<FileExistsBehavior>,
        deployment: Option<FileExistsBehavior>,
    ) -> FileExistsBehavior {
        appspec
            .or(deployment)
            .unwrap_or(FileExistsBehavior::Disallow)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct FileMapping {
    pub source: String,
    pub destination: String,
    pub pos: Pos,
}

/// Default per-script timeout, in seconds, as in the official agents.
pub const DEFAULT_SCRIPT_TIMEOUT: u32 = 3600;

#[derive(Clone, Debug, PartialEq)]
pub struct Script {
    /// Path relative to the revision root, as written (leading `/` allowed).
    pub location: String,
    pub runas: Option<String>,
    pub sudo: bool,
    pub timeout: u32,
    pub pos: Pos,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjectTypes {
    pub file: bool,
    pub directory: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Permission {
    /// Index in the `permissions` list, for messages.
    pub index: usize,
    pub object: String,
    /// `None` is the default `**`: everything below the object.
    pub pattern: Option<Glob>,
    pub except: Vec<Glob>,
    pub types: ObjectTypes,
    pub owner: Option<String>,
    pub group: Option<String>,
    pub mode: Option<Mode>,
    pub acls: Option<Acl>,
    pub context: Option<SeContext>,
    pub pos: Pos,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Hook {
    pub event: String,
    pub scripts: Vec<Script>,
    pub pos: Pos,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AppSpec {
    pub os: Os,
    pub files: Vec<FileMapping>,
    pub file_exists_behavior: Option<FileExistsBehavior>,
    pub permissions: Vec<Permission>,
    /// In document order; an event appears once (the last one written wins).
    pub hooks: Vec<Hook>,
    pub load_balancer: Option<LoadBalancer>,
}

impl AppSpec {
    pub fn scripts(&self, event: &str) -> &[Script] {
        self.hooks
            .iter()
            .find(|h| h.event == event)
            .map(|h| h.scripts.as_slice())
            .unwrap_or(&[])
    }

    pub fn hook_events(&self) -> impl Iterator<Item = &str> {
        self.hooks.iter().map(|h| h.event.as_str())
    }

    pub fn script_count(&self) -> usize {
        self.hooks.iter().map(|h| h.scripts.len()).sum()
    }
}
