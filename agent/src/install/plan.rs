//! The install plan: appspec + revision listing + what exists on the host
//! -> the directories to create, the files to copy, and the permissions to
//! set, with the official agent's rules and messages. Pure: the host is
//! seen only through the `probe` callback.
//!
//! The plan is a tree of destination paths rooted at `/`, so duplicate
//! destinations across mappings are found without path strings, and
//! `permissions` walk only the subtree of their object.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::hash::{Hash, Hasher};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use appspec::yaml::Pos;
use appspec::{AppSpec, FileExistsBehavior, Permission};

use super::archive_tree::{AKind, ArchiveTree};
use super::paths::PathCursor;
use crate::fsutil::expand_path;
use crate::links;

/// What a destination path is on the host, as far as the plan cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Existing {
    Missing,
    /// A directory, or a symlink to one (the official agent follows those).
    Dir,
    /// A file, a symlink to a file, a dangling symlink, anything else.
    NonDir,
    /// Listed by the previous deployment's cleanup file: it goes away
    /// before this install, but what is below it may not.
    Ledger,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DKind {
    /// A directory that exists and is left alone.
    Existing,
    /// A directory this install creates.
    Create,
    /// A file or symlink copied from the revision (`replace`: over an
    /// existing one, for OVERWRITE).
    Copy { src: u32, replace: bool },
    /// An existing file kept in place (RETAIN).
    Keep,
}

/// A plan node, 20 bytes (a million files, 12 MB less than the 32 a
/// `DKind` field and a field per use took): the kind is a tag in `bits`,
/// with a copy's source in `payload`, where any other node has where its
/// name starts in `names`; `aux` is a directory's first child, and a file's
/// permission (a directory's is in `dir_perms`: one node in twenty is a
/// directory, and few of them have one).
#[derive(Clone, Copy, Debug)]
struct DNode {
    parent: u32,
    payload: u32,
    aux: u32,
    next_sibling: u32,
    name_len: u16,
    /// `TAG_MASK`: the kind; `FRESH`: created here and absent before,
    /// nothing below needs probing; `INDEXED`: its children are in `index`
    /// (see `find_child`).
    bits: u8,
}

const TAG_MASK: u8 = 0b111;
const FRESH: u8 = 1 << 3;
const INDEXED: u8 = 1 << 4;

impl DNode {
    fn new(parent: u32, kind: DKind, name: (u32, u16), fresh: bool, next_sibling: u32) -> DNode {
        let (tag, payload) = match kind {
            DKind::Existing => (0, name.0),
            DKind::Create => (1, name.0),
            DKind::Copy {
                src,
                replace: false,
            } => (2, src),
            DKind::Copy { src, replace: true } => (3, src),
            DKind::Keep => (4, name.0),
        };
        DNode {
            parent,
            payload,
            name_len: name.1,
            bits: tag | if fresh { FRESH } else { 0 },
            aux: NONE,
            next_sibling,
        }
    }

    fn kind(&self) -> DKind {
        match self.bits & TAG_MASK {
            0 => DKind::Existing,
            1 => DKind::Create,
            2 => DKind::Copy {
                src: self.payload,
                replace: false,
            },
            3 => DKind::Copy {
                src: self.payload,
                replace: true,
            },
            _ => DKind::Keep,
        }
    }

    fn fresh(&self) -> bool {
        self.bits & FRESH != 0
    }

    fn indexed(&self) -> bool {
        self.bits & INDEXED != 0
    }

    /// A directory: it has children, and `aux` is the first of them.
    fn is_dir(&self) -> bool {
        matches!(self.kind(), DKind::Existing | DKind::Create)
    }
}

const NONE: u32 = u32::MAX;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanError {
    pub field: String,
    pub pos: Pos,
    pub message: String,
}

/// At most this many errors are collected; a revision deployed over an
/// unmanaged tree could otherwise report every one of its files.
const MAX_ERRORS: usize = 20;

/// A node with more children than this gets them indexed the first time one
/// is looked up; fewer are found by walking the sibling list.
const INDEX_FROM: usize = 16;

pub struct InstallPlan<'a> {
    spec: &'a AppSpec,
    /// A copied file's name is its source's: only directories and kept
    /// files have theirs in `names` (a million files, 10 MB less).
    archive: &'a ArchiveTree,
    nodes: Vec<DNode>,
    names: Vec<u8>,
    /// (parent, name hash) -> child, for the children of `indexed` nodes
    /// only: the usual revision maps each directory once, and then no
    /// lookup is needed at all (see `copy_dir`).
    index: HashMap<(u32, u64), u32>,
    /// Directories' permissions, by node (see `DNode`).
    dir_perms: HashMap<u32, u32>,
    errors: Vec<PlanError>,
    more_errors: usize,
    /// The path of the directory whose files were last probed.
    probed: PathCursor,
}

impl std::fmt::Debug for InstallPlan<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstallPlan")
            .field("nodes", &self.nodes.len())
            .field("counts", &self.counts())
            .finish()
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub dirs_created: usize,
    pub files: usize,
    pub replaced: usize,
    pub kept: usize,
    pub with_permissions: usize,
}

fn name_hash(name: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut h);
    h.finish()
}

pub fn plan<'a>(
    spec: &'a AppSpec,
    archive: &'a ArchiveTree,
    behavior: FileExistsBehavior,
    cwd: &Path,
    probe: &mut dyn FnMut(&Path) -> Existing,
) -> Result<InstallPlan<'a>, Vec<PlanError>> {
    // Sized for one mapping of the whole revision plus a destination's
    // ancestors, so the node array is not doubled (and copied) as it grows.
    let mut nodes = Vec::with_capacity(archive.len() + 16);
    nodes.push(DNode::new(NONE, DKind::Existing, (0, 0), false, NONE));
    let mut p = InstallPlan {
        spec,
        archive,
        nodes,
        names: Vec::new(),
        index: HashMap::new(),
        dir_perms: HashMap::new(),
        errors: Vec::new(),
        more_errors: 0,
        probed: PathCursor::default(),
    };
    for (i, m) in spec.files.iter().enumerate() {
        let field = format!("files[{i}]");
        let src_rel = Path::new(m.source.trim_start_matches('/'));
        if src_rel.components().any(|c| c == Component::ParentDir) {
            p.error(
                &format!("{field}.source"),
                m.pos,
                format!("source {} climbs out of the revision with '..'", m.source),
            );
            continue;
        }
        let Some(src) = archive.lookup(src_rel) else {
            p.error(
                &format!("{field}.source"),
                m.pos,
                format!("source {} does not exist in the revision", m.source),
            );
            continue;
        };
        let dest = expand_path(Path::new(&m.destination), cwd);
        let ctx = Ctx {
            field: &field,
            pos: m.pos,
            behavior,
            archive,
        };
        if archive.kind(src) == AKind::Dir {
            let Some(d) = p.dir_path(&dest, &ctx, probe) else {
                continue;
            };
            p.copy_dir(src, d, &mut PathBuf::new(), &ctx, probe);
        } else {
            let Some(d) = p.dir_path(&dest, &ctx, probe) else {
                continue;
            };
            p.child_file(
                d,
                archive.name(src),
                false,
                src,
                Path::new(OsStr::from_bytes(archive.name(src))),
                &ctx,
                probe,
            );
        }
        if p.errors.len() >= MAX_ERRORS {
            break;
        }
    }
    if p.errors.is_empty() {
        for perm in &spec.permissions {
            p.apply_permission(perm, cwd);
        }
    }
    if p.errors.is_empty() {
        return Ok(p);
    }
    let mut errors = p.errors;
    if p.more_errors > 0 {
        let last = errors.last().cloned().expect("non-empty");
        errors.push(PlanError {
            message: format!("... and {} more like these", p.more_errors),
            ..last
        });
    }
    Err(errors)
}

struct Ctx<'c> {
    field: &'c str,
    pos: Pos,
    behavior: FileExistsBehavior,
    archive: &'c ArchiveTree,
}

impl<'a> InstallPlan<'a> {
    fn error(&mut self, field: &str, pos: Pos, message: String) {
        if self.errors.len() >= MAX_ERRORS {
            self.more_errors += 1;
        } else {
            self.errors.push(PlanError {
                field: field.to_string(),
                pos,
                message,
            });
        }
    }

    fn name(&self, id: u32) -> &[u8] {
        let n = &self.nodes[id as usize];
        match n.kind() {
            DKind::Copy { src, .. } => self.archive.name(src),
            _ => &self.names[n.payload as usize..n.payload as usize + n.name_len as usize],
        }
    }

    fn find_child(&mut self, parent: u32, name: &[u8]) -> Option<u32> {
        if !self.nodes[parent as usize].indexed() {
            if self.siblings(parent).nth(INDEX_FROM).is_none() {
                return self.siblings(parent).find(|&c| self.name(c) == name);
            }
            self.index_children(parent);
        }
        let id = *self.index.get(&(parent, name_hash(name)))?;
        if self.name(id) == name {
            return Some(id);
        }
        // A 64-bit hash collision: fall back to the sibling list.
        self.siblings(parent).find(|&c| self.name(c) == name)
    }

    fn find_child_unless(&mut self, unique: bool, parent: u32, name: &[u8]) -> Option<u32> {
        if unique {
            return None;
        }
        self.find_child(parent, name)
    }

    fn siblings(&self, parent: u32) -> impl Iterator<Item = u32> + '_ {
        let first = self.first_child(parent);
        std::iter::successors((first != NONE).then_some(first), |&c| {
            let next = self.nodes[c as usize].next_sibling;
            (next != NONE).then_some(next)
        })
    }

    fn index_children(&mut self, parent: u32) {
        let kids: Vec<u32> = self.siblings(parent).collect();
        // Oldest first, as `add` would have inserted them.
        for &c in kids.iter().rev() {
            let h = name_hash(self.name(c));
            self.index.entry((parent, h)).or_insert(c);
        }
        self.nodes[parent as usize].bits |= INDEXED;
    }

    fn add(&mut self, parent: u32, name: &[u8], kind: DKind, fresh: bool) -> u32 {
        let id = self.nodes.len() as u32;
        let prev_first = self.first_child(parent);
        let own_name = !matches!(kind, DKind::Copy { .. });
        debug_assert!(
            own_name || matches!(kind, DKind::Copy { src, .. } if self.archive.name(src) == name)
        );
        let own = if own_name {
            (self.names.len() as u32, name.len() as u16)
        } else {
            (0, 0)
        };
        self.nodes
            .push(DNode::new(parent, kind, own, fresh, prev_first));
        if own_name {
            self.names.extend_from_slice(name);
        }
        debug_assert!(self.nodes[parent as usize].is_dir());
        self.nodes[parent as usize].aux = id;
        if self.nodes[parent as usize].indexed() {
            self.index.entry((parent, name_hash(name))).or_insert(id);
        }
        id
    }

    /// The full destination path of a node.
    pub fn path(&self, id: u32) -> PathBuf {
        let mut chain = Vec::new();
        let mut cur = id;
        while cur != 0 {
            chain.push(cur);
            cur = self.nodes[cur as usize].parent;
        }
        let mut p = PathBuf::from("/");
        for c in chain.iter().rev() {
            p.push(OsStr::from_bytes(self.name(*c)));
        }
        p
    }

    /// `path(id)` for ids taken in order: built from the last one's
    /// directory when `id` shares it.
    pub fn path_in<'c>(&self, id: u32, cursor: &'c mut PathCursor) -> &'c Path {
        let dir = self.parent(id);
        cursor.get(dir, self.name(id), || self.path(dir))
    }

    /// The directory node for an absolute path, creating plan nodes (and
    /// planning mkdirs) for what is missing.
    fn dir_path(
        &mut self,
        dest: &Path,
        ctx: &Ctx,
        probe: &mut dyn FnMut(&Path) -> Existing,
    ) -> Option<u32> {
        let mut cur = 0u32;
        let mut path = PathBuf::from("/");
        for c in dest.components() {
            let Component::Normal(n) = c else { continue };
            path.push(n);
            cur = self.child_dir(cur, n.as_bytes(), false, &path, ctx, probe)?;
        }
        Some(cur)
    }

    /// `unique`: the caller knows `parent` has no child of that name yet.
    fn child_dir(
        &mut self,
        parent: u32,
        name: &[u8],
        unique: bool,
        path: &Path,
        ctx: &Ctx,
        probe: &mut dyn FnMut(&Path) -> Existing,
    ) -> Option<u32> {
        if let Some(id) = self.find_child_unless(unique, parent, name) {
            return match self.nodes[id as usize].kind() {
                DKind::Existing | DKind::Create => Some(id),
                DKind::Copy { .. } | DKind::Keep => {
                    self.error(
                        ctx.field,
                        ctx.pos,
                        format!("the revision needs a directory at {}, where another mapping installs a file", path.display()),
                    );
                    None
                }
            };
        }
        let state = if self.nodes[parent as usize].fresh() {
            Existing::Missing
        } else {
            probe(path)
        };
        let (kind, fresh) = match state {
            Existing::Missing => (DKind::Create, true),
            Existing::Ledger => (DKind::Create, false),
            Existing::Dir => (DKind::Existing, false),
            Existing::NonDir => {
                self.error(
                    ctx.field,
                    ctx.pos,
                    format!(
                        "a file already exists at {}, where the revision needs a directory",
                        path.display()
                    ),
                );
                return None;
            }
        };
        Some(self.add(parent, name, kind, fresh))
    }

    fn copy_dir(
        &mut self,
        src: u32,
        dst: u32,
        rel: &mut PathBuf,
        ctx: &Ctx,
        probe: &mut dyn FnMut(&Path) -> Existing,
    ) {
        // Into a directory with nothing planned in it yet, every name comes
        // from one archive directory, so each is new there: no lookups.
        let unique = self.first_child(dst) == NONE;
        for child in ctx.archive.children(src) {
            if self.errors.len() >= MAX_ERRORS {
                self.more_errors += 1;
                continue;
            }
            let name = ctx.archive.name(child);
            rel.push(OsStr::from_bytes(name));
            if ctx.archive.kind(child) == AKind::Dir {
                let path = self.path(dst).join(OsStr::from_bytes(name));
                if let Some(d) = self.child_dir(dst, name, unique, &path, ctx, probe) {
                    self.copy_dir(child, d, rel, ctx, probe);
                }
            } else {
                self.child_file(dst, name, unique, child, rel, ctx, probe);
            }
            rel.pop();
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn child_file(
        &mut self,
        parent: u32,
        name: &[u8],
        unique: bool,
        src: u32,
        rel: &Path,
        ctx: &Ctx,
        probe: &mut dyn FnMut(&Path) -> Existing,
    ) {
        let archive = ctx.archive;
        if archive.kind(src) == AKind::Other {
            self.error(
                ctx.field,
                ctx.pos,
                format!(
                    "{} in the revision is not a file, directory or symlink",
                    archive.full_path(src).display()
                ),
            );
            return;
        }
        if archive.kind(src) == AKind::Symlink {
            let target = archive.link_target(src).unwrap_or_default();
            if let Some(why) = links::outside_root(rel, target) {
                let entry = rel.display().to_string();
                self.error(
                    ctx.field,
                    ctx.pos,
                    format!("archive entry {entry:?} refused: {why}; once installed it would point outside the destination"),
                );
                return;
            }
        }
        if let Some(id) = self.find_child_unless(unique, parent, name) {
            match self.nodes[id as usize].kind() {
                DKind::Copy { src: other, .. } => {
                    let msg = format!(
                        "two source files, {} and {}, are mapped to the same destination {}",
                        archive.full_path(other).display(),
                        archive.full_path(src).display(),
                        self.path(id).display()
                    );
                    self.error(ctx.field, ctx.pos, msg);
                }
                DKind::Create | DKind::Existing => {
                    let msg = format!(
                        "the revision installs the file {} at {}, where a directory is",
                        archive.full_path(src).display(),
                        self.path(id).display()
                    );
                    self.error(ctx.field, ctx.pos, msg);
                }
                DKind::Keep => {}
            }
            return;
        }
        let state = if self.nodes[parent as usize].fresh() {
            Existing::Missing
        } else {
            // Siblings come one after another: their directory's path is
            // built once.
            let mut at = std::mem::take(&mut self.probed);
            let state = probe(at.get(parent, name, || self.path(parent)));
            self.probed = at;
            state
        };
        let kind = match (state, ctx.behavior) {
            (Existing::Missing | Existing::Ledger, _) => DKind::Copy {
                src,
                replace: false,
            },
            (_, FileExistsBehavior::Retain) => DKind::Keep,
            (Existing::NonDir, FileExistsBehavior::Overwrite) => DKind::Copy { src, replace: true },
            (Existing::Dir, FileExistsBehavior::Overwrite) => {
                let path = self.path(parent).join(OsStr::from_bytes(name));
                self.error(
                    ctx.field,
                    ctx.pos,
                    format!(
                        "cannot overwrite the directory {} with a file",
                        path.display()
                    ),
                );
                return;
            }
            (_, FileExistsBehavior::Disallow) => {
                let path = self.path(parent).join(OsStr::from_bytes(name));
                self.error(
                    ctx.field,
                    ctx.pos,
                    format!(
                        "a specified file already exists at this location: {} (it was not installed by the previous deployment of this group; set file_exists_behavior to OVERWRITE or RETAIN to deploy over it)",
                        path.display()
                    ),
                );
                return;
            }
        };
        self.add(parent, name, kind, false);
    }

    /// Resolve a permission entry to the nodes it applies to, exactly as the
    /// official agent matches them (see `matches`).
    fn apply_permission(&mut self, perm: &Permission, cwd: &Path) {
        let field = format!("permissions[{}]", perm.index);
        let object = expand_path(Path::new(&perm.object), cwd);
        let Some(node) = self.lookup(&object) else {
            return;
        };
        match self.nodes[node as usize].kind() {
            DKind::Copy { .. } => {
                if !perm.types.file {
                    return;
                }
                if perm.pattern.is_some() || !perm.except.is_empty() {
                    self.error(
                        &field,
                        perm.pos,
                        format!(
                            "object {} is a file, so pattern and except cannot be used with it",
                            perm.object
                        ),
                    );
                    return;
                }
                if perm.acls.as_ref().is_some_and(|a| a.has_default()) {
                    self.error(
                        &field,
                        perm.pos,
                        format!(
                            "default ACL entries (d:) apply to directories only, and {} is a file",
                            perm.object
                        ),
                    );
                    return;
                }
                self.assign(node, perm, &field);
            }
            DKind::Create | DKind::Existing => {
                let mut stack = vec![(node, 0usize)];
                let mut matched = Vec::new();
                while let Some((id, depth)) = stack.pop() {
                    let mut c = self.first_child(id);
                    while c != NONE {
                        if self.matches(perm, c, depth + 1) {
                            matched.push(c);
                        }
                        stack.push((c, depth + 1));
                        c = self.nodes[c as usize].next_sibling;
                    }
                }
                matched.sort_unstable();
                for m in matched {
                    if let DKind::Copy { .. } = self.nodes[m as usize].kind() {
                        if perm.acls.as_ref().is_some_and(|a| a.has_default()) {
                            let msg = format!(
                                "default ACL entries (d:) apply to directories only, and {} is a file",
                                self.path(m).display()
                            );
                            self.error(&field, perm.pos, msg);
                            return;
                        }
                    }
                    self.assign(m, perm, &field);
                }
            }
            DKind::Keep => {}
        }
    }

    /// The official matching: targets are files this install copies and
    /// directories it creates; `pattern` (unless `**`) and `except` look only
    /// at names directly inside the object.
    fn matches(&self, perm: &Permission, id: u32, depth: usize) -> bool {
        let n = &self.nodes[id as usize];
        let type_ok = match n.kind() {
            DKind::Copy { .. } => perm.types.file,
            DKind::Create => perm.types.directory,
            DKind::Existing | DKind::Keep => false,
        };
        if !type_ok {
            return false;
        }
        let name = self.name(id);
        let pattern_ok = match &perm.pattern {
            None => true,
            Some(g) => depth == 1 && g.matches(name),
        };
        let excepted = depth == 1 && perm.except.iter().any(|g| g.matches(name));
        pattern_ok && !excepted
    }

    fn assign(&mut self, id: u32, perm: &Permission, field: &str) {
        let prev = self.perm(id);
        if prev != NONE {
            let msg = format!(
                "the permissions for {} are specified more than once (permissions[{prev}] and permissions[{}])",
                self.path(id).display(),
                perm.index
            );
            self.error(field, perm.pos, msg);
            return;
        }
        if self.nodes[id as usize].is_dir() {
            self.dir_perms.insert(id, perm.index as u32);
        } else {
            self.nodes[id as usize].aux = perm.index as u32;
        }
    }

    fn first_child(&self, id: u32) -> u32 {
        let n = &self.nodes[id as usize];
        if n.is_dir() {
            n.aux
        } else {
            NONE
        }
    }

    /// The index of the node's permission, or NONE.
    fn perm(&self, id: u32) -> u32 {
        let n = &self.nodes[id as usize];
        if n.is_dir() {
            self.dir_perms.get(&id).copied().unwrap_or(NONE)
        } else {
            n.aux
        }
    }

    fn lookup(&mut self, path: &Path) -> Option<u32> {
        let mut cur = 0u32;
        for c in path.components() {
            if let Component::Normal(n) = c {
                cur = self.find_child(cur, n.as_bytes())?;
            }
        }
        Some(cur)
    }

    // ---- what the executor reads ----

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.len() <= 1
    }

    /// Node ids in creation order: every directory before what it contains.
    pub fn ids(&self) -> std::ops::Range<u32> {
        1..self.nodes.len() as u32
    }

    pub fn kind(&self, id: u32) -> DKind {
        self.nodes[id as usize].kind()
    }

    pub fn parent(&self, id: u32) -> u32 {
        self.nodes[id as usize].parent
    }

    pub fn file_name(&self, id: u32) -> &OsStr {
        OsStr::from_bytes(self.name(id))
    }

    pub fn permission(&self, id: u32) -> Option<&'a Permission> {
        let p = self.perm(id);
        (p != NONE).then(|| &self.spec.permissions[p as usize])
    }

    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for (i, n) in self.nodes.iter().enumerate().skip(1) {
            match n.kind() {
                DKind::Create => c.dirs_created += 1,
                DKind::Copy { replace, .. } => {
                    c.files += 1;
                    if replace {
                        c.replaced += 1;
                    }
                }
                DKind::Keep => c.kept += 1,
                DKind::Existing => {}
            }
            if self.perm(i as u32) != NONE {
                c.with_permissions += 1;
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use appspec::Os;
    use std::collections::HashSet;

    fn spec(src: &str) -> AppSpec {
        appspec::parse(src, "appspec.yml", Os::Linux).unwrap().spec
    }

    fn tree() -> ArchiveTree {
        use AKind::*;
        ArchiveTree::from_listing(
            Path::new("/arch"),
            &[
                ("appspec.yml", File, None),
                ("html", Dir, None),
                ("html/index.html", File, None),
                ("html/app.tmp", File, None),
                ("html/css", Dir, None),
                ("html/css/site.css", File, None),
                ("html/css/old.tmp", File, None),
                ("html/home", Symlink, Some("index.html")),
                ("scripts", Dir, None),
                ("scripts/start.sh", File, None),
            ],
        )
    }

    /// A host described by the paths that exist on it.
    struct Host {
        dirs: HashSet<PathBuf>,
        files: HashSet<PathBuf>,
        ledger: HashSet<PathBuf>,
        probes: usize,
    }

    impl Host {
        fn new(dirs: &[&str], files: &[&str]) -> Host {
            Host {
                dirs: dirs.iter().map(PathBuf::from).collect(),
                files: files.iter().map(PathBuf::from).collect(),
                ledger: HashSet::new(),
                probes: 0,
            }
        }
        fn probe(&mut self, p: &Path) -> Existing {
            self.probes += 1;
            if self.ledger.contains(p) {
                Existing::Ledger
            } else if self.dirs.contains(p) {
                Existing::Dir
            } else if self.files.contains(p) {
                Existing::NonDir
            } else {
                Existing::Missing
            }
        }
    }

    fn run<'a>(
        s: &'a AppSpec,
        host: &mut Host,
        b: FileExistsBehavior,
    ) -> Result<InstallPlan<'a>, Vec<PlanError>> {
        // Leaked: the plan borrows the listing (tests only).
        let t: &'static ArchiveTree = Box::leak(Box::new(tree()));
        plan(s, t, b, Path::new("/"), &mut |p| host.probe(p))
    }

    /// Plan on a host that has only `/var`, with DISALLOW.
    fn on_var(s: &AppSpec) -> Result<InstallPlan<'_>, Vec<PlanError>> {
        run(
            s,
            &mut Host::new(&["/var"], &[]),
            FileExistsBehavior::Disallow,
        )
    }

    fn listing(p: &InstallPlan) -> Vec<String> {
        p.ids()
            .map(|id| {
                let k = match p.kind(id) {
                    DKind::Existing => "existing",
                    DKind::Create => "mkdir",
                    DKind::Copy { replace: false, .. } => "copy",
                    DKind::Copy { replace: true, .. } => "replace",
                    DKind::Keep => "keep",
                };
                format!("{k} {}", p.path(id).display())
            })
            .collect()
    }

    const SEED: &str =
        "version: 0.0\nos: linux\nfiles:\n  - source: /html\n    destination: /var/www/html\n";

    #[test]
    fn directory_source_copies_its_content_and_creates_missing_ancestors() {
        let s = spec(SEED);
        let mut host = Host::new(&["/var"], &[]);
        let p = run(&s, &mut host, FileExistsBehavior::Disallow).unwrap();
        let l = listing(&p);
        assert_eq!(
            l,
            vec![
                "existing /var",
                "mkdir /var/www",
                "mkdir /var/www/html",
                "copy /var/www/html/app.tmp",
                "mkdir /var/www/html/css",
                "copy /var/www/html/css/old.tmp",
                "copy /var/www/html/css/site.css",
                "copy /var/www/html/home",
                "copy /var/www/html/index.html",
            ]
        );
        // Below a directory this install creates, nothing is probed.
        assert_eq!(host.probes, 2);
        assert_eq!(
            p.counts(),
            Counts {
                dirs_created: 3,
                files: 5,
                ..Counts::default()
            }
        );
    }

    #[test]
    fn file_source_lands_inside_the_destination() {
        let s = spec("version: 0.0\nos: linux\nfiles:\n  - source: scripts/start.sh\n    destination: /opt/bin\n");
        let mut host = Host::new(&["/opt"], &[]);
        let p = run(&s, &mut host, FileExistsBehavior::Disallow).unwrap();
        assert_eq!(
            listing(&p),
            vec!["existing /opt", "mkdir /opt/bin", "copy /opt/bin/start.sh"]
        );
    }

    #[test]
    fn file_exists_behaviors() {
        let s = spec(SEED);
        let existing = ["/var/www/html/index.html"];
        let dirs = ["/var", "/var/www", "/var/www/html"];
        let err = run(
            &s,
            &mut Host::new(&dirs, &existing),
            FileExistsBehavior::Disallow,
        )
        .unwrap_err();
        assert_eq!(err.len(), 1);
        assert!(
            err[0].message.contains(
                "a specified file already exists at this location: /var/www/html/index.html"
            ),
            "{}",
            err[0].message
        );
        assert_eq!((err[0].field.as_str(), err[0].pos.line), ("files[0]", 4));
        let p = run(
            &s,
            &mut Host::new(&dirs, &existing),
            FileExistsBehavior::Overwrite,
        )
        .unwrap();
        assert!(listing(&p).contains(&"replace /var/www/html/index.html".to_string()));
        let p = run(
            &s,
            &mut Host::new(&dirs, &existing),
            FileExistsBehavior::Retain,
        )
        .unwrap();
        assert!(listing(&p).contains(&"keep /var/www/html/index.html".to_string()));
        // Files of the previous deployment do not count as existing.
        let mut host = Host::new(&dirs, &existing);
        host.ledger
            .insert(PathBuf::from("/var/www/html/index.html"));
        let p = run(&s, &mut host, FileExistsBehavior::Disallow).unwrap();
        assert!(listing(&p).contains(&"copy /var/www/html/index.html".to_string()));
    }

    #[test]
    fn a_ledger_directory_is_recreated_and_its_content_still_probed() {
        let s = spec(SEED);
        let mut host = Host::new(
            &["/var", "/var/www", "/var/www/html", "/var/www/html/css"],
            &[
                "/var/www/html/user-upload.png",
                "/var/www/html/css/site.css",
            ],
        );
        host.ledger.insert(PathBuf::from("/var/www/html"));
        let err = run(&s, &mut host, FileExistsBehavior::Disallow).unwrap_err();
        assert!(
            err[0].message.contains("/var/www/html/css/site.css"),
            "{err:?}"
        );
    }

    #[test]
    fn conflicts_between_mappings_and_kinds() {
        let s = spec("version: 0.0\nos: linux\nfiles:\n  - source: html/index.html\n    destination: /srv\n  - source: html/css/site.css\n    destination: /srv\n  - source: html\n    destination: /srv\n");
        let err = run(
            &s,
            &mut Host::new(&["/srv"], &[]),
            FileExistsBehavior::Disallow,
        )
        .unwrap_err();
        assert_eq!(err.len(), 1, "{err:?}");
        assert!(
            err[0]
                .message
                .contains("are mapped to the same destination /srv/index.html"),
            "{err:?}"
        );
        assert_eq!(err[0].field, "files[2]");
        let s = spec("version: 0.0\nos: linux\nfiles:\n  - source: html\n    destination: /srv\n");
        let err = run(
            &s,
            &mut Host::new(&["/srv"], &["/srv/css"]),
            FileExistsBehavior::Overwrite,
        )
        .unwrap_err();
        assert!(
            err[0].message.contains(
                "a file already exists at /srv/css, where the revision needs a directory"
            ),
            "{err:?}"
        );
        let err = run(
            &s,
            &mut Host::new(&["/srv", "/srv/index.html"], &[]),
            FileExistsBehavior::Overwrite,
        )
        .unwrap_err();
        assert!(
            err[0]
                .message
                .contains("cannot overwrite the directory /srv/index.html"),
            "{err:?}"
        );
        let s = spec("version: 0.0\nos: linux\nfiles:\n  - source: /nope\n    destination: /srv\n");
        let err = run(
            &s,
            &mut Host::new(&["/srv"], &[]),
            FileExistsBehavior::Disallow,
        )
        .unwrap_err();
        assert_eq!(
            (err[0].field.as_str(), err[0].message.as_str()),
            (
                "files[0].source",
                "source /nope does not exist in the revision"
            )
        );
    }

    #[test]
    fn symlinks_must_stay_inside_the_destination() {
        use AKind::*;
        let t = ArchiveTree::from_listing(
            Path::new("/arch"),
            &[
                ("a", Dir, None),
                ("a/b", Dir, None),
                ("a/b/up", Symlink, Some("../../x")),
                ("x", File, None),
            ],
        );
        // Mapping the whole revision keeps the link inside.
        let whole = spec("version: 0.0\nos: linux\nfiles:\n  - source: /\n    destination: /srv\n");
        let mut only_srv = |p: &Path| {
            if p == Path::new("/srv") {
                Existing::Dir
            } else {
                Existing::Missing
            }
        };
        assert!(plan(
            &whole,
            &t,
            FileExistsBehavior::Disallow,
            Path::new("/"),
            &mut only_srv
        )
        .is_ok());
        // Mapping a subdirectory would make it point above the destination.
        let sub = spec("version: 0.0\nos: linux\nfiles:\n  - source: /a\n    destination: /srv\n");
        let err = plan(
            &sub,
            &t,
            FileExistsBehavior::Disallow,
            Path::new("/"),
            &mut only_srv,
        )
        .unwrap_err();
        assert!(
            err[0].message.contains("outside the destination"),
            "{err:?}"
        );
    }

    #[test]
    fn permissions_match_like_the_official_agent() {
        let s = spec(&format!(
            "{SEED}permissions:\n  - object: /var/www/html\n    pattern: '*.tmp'\n    mode: 600\n  - object: /var/www/html/index.html\n    owner: root\n  - object: /var/www/html/css\n    except: ['*.tmp']\n    type: [file]\n    mode: 644\n"
        ));
        let p = on_var(&s).unwrap();
        let with: Vec<(String, usize)> = p
            .ids()
            .filter_map(|id| {
                p.permission(id)
                    .map(|perm| (p.path(id).display().to_string(), perm.index))
            })
            .collect();
        assert_eq!(
            with,
            vec![
                ("/var/www/html/app.tmp".to_string(), 0),
                ("/var/www/html/css/site.css".to_string(), 2),
                ("/var/www/html/index.html".to_string(), 1),
            ]
        );
    }

    #[test]
    fn except_and_pattern_look_only_one_level_down() {
        // The official agent's quirk, kept for compatibility: with the
        // default pattern, `except` does not reach into subdirectories.
        let s = spec(&format!("{SEED}permissions:\n  - object: /var/www\n    except: ['*.tmp']\n    type: [file]\n    mode: 640\n"));
        let p = on_var(&s).unwrap();
        assert_eq!(p.counts().with_permissions, 5);
    }

    #[test]
    fn permission_errors() {
        let twice = spec(&format!("{SEED}permissions:\n  - object: /var/www/html\n    mode: 600\n  - object: /var/www/html/css\n    mode: 644\n"));
        let err = on_var(&twice).unwrap_err();
        assert!(
            err[0]
                .message
                .contains("specified more than once (permissions[0] and permissions[1])"),
            "{err:?}"
        );
        assert_eq!(err[0].field, "permissions[1]");
        let file_pattern = spec(&format!("{SEED}permissions:\n  - object: /var/www/html/index.html\n    pattern: 'x*'\n    mode: 600\n"));
        let err = on_var(&file_pattern).unwrap_err();
        assert!(
            err[0]
                .message
                .contains("is a file, so pattern and except cannot be used"),
            "{err:?}"
        );
        let file_default_acl = spec(&format!("{SEED}permissions:\n  - object: /var/www/html/index.html\n    acls: ['d:u:root:rwx']\n"));
        let err = on_var(&file_default_acl).unwrap_err();
        assert!(err[0].message.contains("directories only"), "{err:?}");
    }

    #[test]
    fn a_second_mapping_into_a_large_directory_finds_every_clash() {
        use AKind::*;
        // One directory above the indexing threshold and one below, each
        // mapped into /srv after a whole directory was; the clashes are
        // found whichever way the children are looked up.
        for n in [INDEX_FROM / 2, INDEX_FROM * 3] {
            let names: Vec<String> = (0..n).map(|i| format!("big/f{i:03}")).collect();
            let mut entries: Vec<(&str, AKind, Option<&str>)> = vec![("big", Dir, None)];
            entries.extend(names.iter().map(|p| (p.as_str(), File, None)));
            entries.extend([
                ("other", Dir, None),
                ("other/f001", File, None),
                ("other/sub", Dir, None),
                ("other/sub/x", File, None),
                ("more", Dir, None),
                ("more/sub", Dir, None),
                ("more/sub/y", File, None),
            ]);
            let t = ArchiveTree::from_listing(Path::new("/arch"), &entries);
            let srv = |p: &Path| {
                if p == Path::new("/srv") {
                    Existing::Dir
                } else {
                    Existing::Missing
                }
            };
            let clash = spec("version: 0.0\nos: linux\nfiles:\n  - source: big\n    destination: /srv\n  - source: other\n    destination: /srv\n");
            let err = plan(
                &clash,
                &t,
                FileExistsBehavior::Disallow,
                Path::new("/"),
                &mut { srv },
            )
            .unwrap_err();
            assert_eq!(err.len(), 1, "{n}: {err:?}");
            assert!(
                err[0].message.contains("same destination /srv/f001"),
                "{n}: {err:?}"
            );
            // Directories of two mappings merge, below a large directory too.
            let merge = spec("version: 0.0\nos: linux\nfiles:\n  - source: big\n    destination: /srv\n  - source: more\n    destination: /srv\n  - source: other/sub\n    destination: /srv/sub\n");
            let p = plan(
                &merge,
                &t,
                FileExistsBehavior::Disallow,
                Path::new("/"),
                &mut { srv },
            )
            .unwrap();
            let l = listing(&p);
            assert_eq!(
                l.iter().filter(|e| e.as_str() == "mkdir /srv/sub").count(),
                1,
                "{l:?}"
            );
            assert!(l.contains(&"copy /srv/sub/x".to_string()), "{l:?}");
            assert!(l.contains(&"copy /srv/sub/y".to_string()), "{l:?}");
            assert_eq!(p.counts().files, n + 2);
        }
    }

    #[test]
    fn a_node_is_20_bytes_and_keeps_its_kind() {
        assert_eq!(std::mem::size_of::<DNode>(), 20);
        for kind in [
            DKind::Existing,
            DKind::Create,
            DKind::Copy {
                src: 7,
                replace: false,
            },
            DKind::Copy {
                src: u32::MAX - 1,
                replace: true,
            },
            DKind::Keep,
        ] {
            let mut n = DNode::new(1, kind, (5, 3), true, 9);
            n.bits |= INDEXED;
            assert_eq!(n.kind(), kind);
            assert!(n.fresh() && n.indexed());
            assert!(!DNode::new(1, kind, (5, 3), false, 9).fresh());
        }
    }

    #[test]
    fn too_many_conflicts_are_summarised() {
        use AKind::*;
        let names: Vec<String> = (0..50).map(|i| format!("f{i:02}")).collect();
        let entries: Vec<(&str, AKind, Option<&str>)> =
            names.iter().map(|n| (n.as_str(), File, None)).collect();
        let t = ArchiveTree::from_listing(Path::new("/arch"), &entries);
        let s = spec("version: 0.0\nos: linux\nfiles:\n  - source: /\n    destination: /srv\n");
        let err = plan(
            &s,
            &t,
            FileExistsBehavior::Disallow,
            Path::new("/"),
            &mut |p| {
                if p == Path::new("/srv") {
                    Existing::Dir
                } else {
                    Existing::NonDir
                }
            },
        )
        .unwrap_err();
        assert_eq!(err.len(), MAX_ERRORS + 1);
        assert!(
            err.last().unwrap().message.contains("and 30 more"),
            "{:?}",
            err.last()
        );
    }
}
