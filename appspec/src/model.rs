//! The typed appspec, as the install planner and hook runner consume it.

use crate::load_balancer::LoadBalancer;
use crate::permissions::{Acl, Glob, Mode, SeContext};
use crate::yaml::Pos;

/// The `os` an appspec is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Os {
    /// `linux`.
    Linux,
    /// `windows`.
    Windows,
}

impl Os {
    /// As the appspec writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Os::Linux => "linux",
            Os::Windows => "windows",
        }
    }
}

/// What Install does with a file that is in the way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileExistsBehavior {
    /// Fail the deployment.
    Disallow,
    /// Replace it.
    Overwrite,
    /// Keep it.
    Retain,
}

impl FileExistsBehavior {
    /// `DISALLOW`, `OVERWRITE` or `RETAIN`.
    pub fn parse(s: &str) -> Option<FileExistsBehavior> {
        match s {
            "DISALLOW" => Some(FileExistsBehavior::Disallow),
            "OVERWRITE" => Some(FileExistsBehavior::Overwrite),
            "RETAIN" => Some(FileExistsBehavior::Retain),
            _ => None,
        }
    }

    /// As the service writes it.
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

/// One entry of `files`.
#[derive(Clone, Debug, PartialEq)]
pub struct FileMapping {
    /// In the revision.
    pub source: String,
    /// On the host.
    pub destination: String,
    /// Where the entry is.
    pub pos: Pos,
}

/// Default per-script timeout, in seconds, as in the official agents.
pub const DEFAULT_SCRIPT_TIMEOUT: u32 = 3600;

/// One script of a hook.
#[derive(Clone, Debug, PartialEq)]
pub struct Script {
    /// Path relative to the revision root, as written (leading `/` allowed).
    pub location: String,
    /// `runas`: the user it runs as.
    pub runas: Option<String>,
    /// `sudo`: through sudo.
    pub sudo: bool,
    /// `timeout`, seconds (default 3600).
    pub timeout: u32,
    /// Where the script is listed.
    pub pos: Pos,
}

/// `type`: which objects a `permissions` entry applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjectTypes {
    /// Files.
    pub file: bool,
    /// Directories.
    pub directory: bool,
}

/// One entry of `permissions`.
#[derive(Clone, Debug, PartialEq)]
pub struct Permission {
    /// Index in the `permissions` list, for messages.
    pub index: usize,
    /// `object`: the path it applies under.
    pub object: String,
    /// `None` is the default `**`: everything below the object.
    pub pattern: Option<Glob>,
    /// `except`: names left alone.
    pub except: Vec<Glob>,
    /// `type`.
    pub types: ObjectTypes,
    /// `owner`.
    pub owner: Option<String>,
    /// `group`.
    pub group: Option<String>,
    /// `mode`.
    pub mode: Option<Mode>,
    /// `acls`.
    pub acls: Option<Acl>,
    /// `context`.
    pub context: Option<SeContext>,
    /// Where the entry is.
    pub pos: Pos,
}

/// One event of `hooks`.
#[derive(Clone, Debug, PartialEq)]
pub struct Hook {
    /// The event's name.
    pub event: String,
    /// Its scripts, in order.
    pub scripts: Vec<Script>,
    /// Where it is.
    pub pos: Pos,
}

/// A parsed appspec.
#[derive(Clone, Debug, PartialEq)]
pub struct AppSpec {
    /// `os`.
    pub os: Os,
    /// `files`.
    pub files: Vec<FileMapping>,
    /// `file_exists_behavior`.
    pub file_exists_behavior: Option<FileExistsBehavior>,
    /// `permissions`.
    pub permissions: Vec<Permission>,
    /// In document order; an event appears once (the last one written wins).
    pub hooks: Vec<Hook>,
    /// `loadBalancer`.
    pub load_balancer: Option<LoadBalancer>,
}

impl AppSpec {
    /// The scripts of `event`, in order (none when it has no hook).
    pub fn scripts(&self, event: &str) -> &[Script] {
        self.hooks
            .iter()
            .find(|h| h.event == event)
            .map(|h| h.scripts.as_slice())
            .unwrap_or(&[])
    }

    /// The events `hooks` names.
    pub fn hook_events(&self) -> impl Iterator<Item = &str> {
        self.hooks.iter().map(|h| h.event.as_str())
    }

    /// How many scripts all hooks hold.
    pub fn script_count(&self) -> usize {
        self.hooks.iter().map(|h| h.scripts.len()).sum()
    }
}
