//! The previous deployment's cleanup file, held as a tree of the components
//! of its paths rather than as its bytes. Its lines repeat their
//! directories (70 bytes a line for a node_modules tree, of which the last
//! name is 10): a node of 12 bytes, that last name and a slot in the child
//! index come to about 28 bytes a line, where the file's bytes, a borrowed
//! entry for each line and a set of them took about 100. The file itself
//! stays on disk for a rollback (see `ledger::Previous`).
//!
//! Paths compare as `Path`s do: `/a//b/` is `/a/b`, a path listed twice is
//! one node. The file is read line by line, each line at most
//! `MAX_LINE` bytes, so no file can make it hold more than its paths.

use std::ffi::OsStr;
use std::fs::File;
use std::hash::{BuildHasher, RandomState};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// The virtual root above `/` (and above the first name of a relative path).
pub const ROOT: u32 = 0;

/// No path is longer than PATH_MAX (4096); a longer line names nothing that
/// can exist and is skipped (a cleanup file is the agent's own, but its
/// bytes are bounded all the same).
const MAX_LINE: usize = 64 * 1024;

/// A line names this path.
const LISTED: u8 = 1;
/// A listed path is directly below it: it was a directory of ours.
const PARENT: u8 = 1 << 1;
/// Every entry inside it is listed (set by `keep`).
const WHOLE: u8 = 1 << 2;
/// Moved aside whole with all below it (set by `keep`).
const MOVED: u8 = 1 << 3;

#[derive(Clone, Copy, Debug)]
struct Node {
    parent: u32,
    name_off: u32,
    name_len: u16,
    flags: u8,
}

#[derive(Debug)]
pub struct Listed {
    /// Parents before children: a node's parent has a smaller id.
    nodes: Vec<Node>,
    names: Vec<u8>,
    /// Every node but the root, by (parent, name).
    children: hashbrown::HashTable<u32>,
    state: RandomState,
    /// `semanage` lines: file-context rules to remove (rare).
    contexts: Vec<PathBuf>,
    paths: usize,
    /// Bytes read, the cut-short last line included: what a rollback gives
    /// back.
    bytes: u64,
}

/// The names a path's components take in the tree. `/`, `.` and `..` cannot
/// be a file's name, so they cannot clash with one.
fn token<'p>(c: &Component<'p>) -> &'p [u8] {
    match c {
        Component::RootDir => b"/",
        Component::CurDir => b".",
        Component::ParentDir => b"..",
        Component::Normal(n) => n.as_bytes(),
        Component::Prefix(p) => p.as_os_str().as_bytes(),
    }
}

/// `line` as (its directory's bytes, its last name), when the name is a
/// plain one: then a cached directory of the same bytes is its parent.
fn split_plain(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = line.iter().rposition(|b| *b == b'/')?;
    let (dir, name) = (&line[..i], &line[i + 1..]);
    let plain = i > 0 && !name.is_empty() && name != b"." && name != b"..";
    plain.then_some((dir, name))
}

/// The last directory looked up, so that paths in the same directory (the
/// usual order of a cleanup file and of a plan) cost one lookup each.
#[derive(Debug, Default)]
pub struct Finder {
    dir: Vec<u8>,
    id: Option<u32>,
}

impl Listed {
    fn empty() -> Listed {
        Listed {
            nodes: vec![Node {
                parent: u32::MAX,
                name_off: 0,
                name_len: 0,
                flags: 0,
            }],
            names: Vec::new(),
            children: hashbrown::HashTable::new(),
            state: RandomState::new(),
            contexts: Vec::new(),
            paths: 0,
            bytes: 0,
        }
    }

    /// Read the cleanup file at `path`; `None` if there is none.
    pub fn read(path: &Path) -> io::Result<Option<Listed>> {
        match File::open(path) {
            Ok(f) => Listed::from_reader(f).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A cleanup file's bytes, as `read` takes them.
    pub fn parse(bytes: &[u8]) -> Listed {
        Listed::from_reader(bytes).unwrap_or_else(|_| unreachable!("reading a slice cannot fail"))
    }

    fn from_reader(r: impl Read) -> io::Result<Listed> {
        let mut r = BufReader::with_capacity(64 * 1024, r);
        let mut l = Listed::empty();
        let mut line = Vec::new();
        let mut finder = Finder::default();
        loop {
            line.clear();
            let n = (&mut r)
                .take(MAX_LINE as u64)
                .read_until(b'\n', &mut line)?;
            if n == 0 {
                break;
            }
            l.bytes += n as u64;
            if line.pop() != Some(b'\n') {
                if n < MAX_LINE {
                    break; // the last line, cut short by a crash: ignored
                }
                l.bytes += skip_line(&mut r)?;
                continue;
            }
            l.add_line(&line, &mut finder);
        }
        l.nodes.shrink_to_fit();
        l.names.shrink_to_fit();
        let (nodes, names, state) = (&l.nodes, &l.names, &l.state);
        l.children
            .shrink_to(0, |j| node_hash(nodes, names, state, j));
        Ok(l)
    }

    fn add_line(&mut self, line: &[u8], finder: &mut Finder) {
        if line.is_empty() {
            return;
        }
        if let Some(p) = line.strip_prefix(b"semanage\0") {
            self.contexts.push(PathBuf::from(OsStr::from_bytes(p)));
            return;
        }
        let Some(id) = self.insert(line, finder) else {
            return;
        };
        let node = &mut self.nodes[id as usize];
        if node.flags & LISTED == 0 {
            node.flags |= LISTED;
            self.paths += 1;
        }
        let parent = node.parent;
        if parent != u32::MAX {
            self.nodes[parent as usize].flags |= PARENT;
        }
    }

    /// The node of `line`, created with its ancestors if need be. `None` for
    /// a line with a name too long for any filesystem.
    fn insert(&mut self, line: &[u8], finder: &mut Finder) -> Option<u32> {
        if let Some((dir, name)) = finder.cached(line) {
            return self.child_or_new(dir, name);
        }
        let mut id = ROOT;
        let mut parent = ROOT;
        for c in Path::new(OsStr::from_bytes(line)).components() {
            parent = id;
            id = self.child_or_new(id, token(&c))?;
        }
        finder.remember(line, parent);
        (id != ROOT).then_some(id)
    }

    fn child_or_new(&mut self, parent: u32, name: &[u8]) -> Option<u32> {
        if let Some(id) = self.child(parent, name) {
            return Some(id);
        }
        let name_len = u16::try_from(name.len()).ok()?;
        let name_off = u32::try_from(self.names.len()).ok()?;
        let id = u32::try_from(self.nodes.len())
            .ok()
            .filter(|i| *i < u32::MAX)?;
        self.names.extend_from_slice(name);
        self.nodes.push(Node {
            parent,
            name_off,
            name_len,
            flags: 0,
        });
        let h = self.hash(parent, name);
        let (nodes, names, state) = (&self.nodes, &self.names, &self.state);
        self.children
            .insert_unique(h, id, |j| node_hash(nodes, names, state, j));
        Some(id)
    }

    fn hash(&self, parent: u32, name: &[u8]) -> u64 {
        self.state.hash_one((parent, name))
    }

    fn name(&self, id: u32) -> &[u8] {
        let n = self.nodes[id as usize];
        &self.names[n.name_off as usize..][..n.name_len as usize]
    }

    fn flags(&self, id: u32) -> u8 {
        self.nodes[id as usize].flags
    }

    /// The child of `parent` named `name`, listed or not.
    pub fn child(&self, parent: u32, name: &[u8]) -> Option<u32> {
        let h = self.hash(parent, name);
        self.children
            .find(h, |&j| {
                self.nodes[j as usize].parent == parent && self.name(j) == name
            })
            .copied()
    }

    /// The node of `p`, listed or only an ancestor of listed paths.
    pub fn find(&self, p: &Path) -> Option<u32> {
        let mut id = ROOT;
        for c in p.components() {
            id = self.child(id, token(&c))?;
        }
        (id != ROOT).then_some(id)
    }

    /// Is `p` listed? Through `finder`, which remembers the last directory.
    pub fn lists(&self, p: &Path, finder: &mut Finder) -> bool {
        let bytes = p.as_os_str().as_bytes();
        let node = match (finder.cached(bytes), split_plain(bytes)) {
            (Some((dir, name)), _) => self.child(dir, name),
            (None, Some((dir, name))) => {
                let dir = self.find(Path::new(OsStr::from_bytes(dir)));
                if let Some(d) = dir {
                    finder.remember(bytes, d);
                }
                dir.and_then(|d| self.child(d, name))
            }
            (None, None) => self.find(p),
        };
        node.is_some_and(|c| self.is_listed(c))
    }

    /// Every listed path's node, parents before children.
    pub fn listed(&self) -> impl Iterator<Item = u32> + '_ {
        (1..self.nodes.len() as u32).filter(|&i| self.is_listed(i))
    }

    /// Every node (listed or not), parents before children.
    pub fn ids(&self) -> std::ops::Range<u32> {
        1..self.nodes.len() as u32
    }

    pub fn path(&self, id: u32) -> PathBuf {
        let mut chain = Vec::with_capacity(16);
        let mut i = id;
        while i != ROOT && i != u32::MAX {
            chain.push(i);
            i = self.nodes[i as usize].parent;
        }
        let mut p = PathBuf::new();
        for &i in chain.iter().rev() {
            p.push(OsStr::from_bytes(self.name(i)));
        }
        p
    }

    /// How many names down from the root `id` is.
    pub fn depth(&self, id: u32) -> usize {
        let mut d = 0;
        let mut i = id;
        while i != ROOT && i != u32::MAX {
            d += 1;
            i = self.nodes[i as usize].parent;
        }
        d
    }

    pub fn parent(&self, id: u32) -> u32 {
        self.nodes[id as usize].parent
    }

    pub fn is_listed(&self, id: u32) -> bool {
        self.flags(id) & LISTED != 0
    }

    /// A listed path with a listed path directly below it: a directory of ours.
    pub fn is_listed_dir(&self, id: u32) -> bool {
        self.flags(id) & (LISTED | PARENT) == LISTED | PARENT
    }

    pub fn is_whole(&self, id: u32) -> bool {
        self.flags(id) & WHOLE != 0
    }

    pub fn set_whole(&mut self, id: u32) {
        self.nodes[id as usize].flags |= WHOLE;
    }

    pub fn is_moved(&self, id: u32) -> bool {
        self.flags(id) & MOVED != 0
    }

    pub fn set_moved(&mut self, id: u32) {
        self.nodes[id as usize].flags |= MOVED;
    }

    /// How many distinct paths the file lists (contexts aside).
    pub fn paths(&self) -> usize {
        self.paths
    }

    pub fn contexts(&self) -> &[PathBuf] {
        &self.contexts
    }

    /// Nothing to remove: no path and no context.
    pub fn is_empty(&self) -> bool {
        self.paths == 0 && self.contexts.is_empty()
    }

    /// The file's length as read.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Finder {
    /// `line` as (its directory's node, its last name), when its directory
    /// is the one remembered.
    fn cached<'l>(&self, line: &'l [u8]) -> Option<(u32, &'l [u8])> {
        let (dir, name) = split_plain(line)?;
        (dir == self.dir.as_slice()).then_some((self.id?, name))
    }

    /// `line`'s directory is node `dir`.
    fn remember(&mut self, line: &[u8], dir: u32) {
        match split_plain(line) {
            Some((d, _)) => {
                self.dir.clear();
                self.dir.extend_from_slice(d);
                self.id = Some(dir);
            }
            None => self.id = None,
        }
    }
}

/// A node's key in the child index (its fields apart, for the borrows).
fn node_hash(nodes: &[Node], names: &[u8], state: &RandomState, j: &u32) -> u64 {
    let n = nodes[*j as usize];
    state.hash_one((
        n.parent,
        &names[n.name_off as usize..][..n.name_len as usize],
    ))
}

/// Skip to the end of an overlong line; returns the bytes skipped.
fn skip_line(r: &mut impl BufRead) -> io::Result<u64> {
    let mut skipped = 0;
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok(skipped);
        }
        match buf.iter().position(|b| *b == b'\n') {
            Some(i) => {
                r.consume(i + 1);
                return Ok(skipped + i as u64 + 1);
            }
            None => {
                let n = buf.len();
                r.consume(n);
                skipped += n as u64;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed_paths(l: &Listed) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = l.listed().map(|i| l.path(i)).collect();
        v.sort();
        v
    }

    #[test]
    fn reads_the_official_format_and_ignores_a_cut_short_line() {
        let bytes = b"/srv/app\n/srv/app/a.txt\nsemanage\0/srv/app/a.txt\n\n/srv/app/partial";
        let l = Listed::parse(bytes);
        assert_eq!(
            listed_paths(&l),
            [PathBuf::from("/srv/app"), PathBuf::from("/srv/app/a.txt")]
        );
        assert_eq!(l.contexts(), [PathBuf::from("/srv/app/a.txt")]);
        assert_eq!(
            l.bytes(),
            bytes.len() as u64,
            "a rollback gives back every byte"
        );
        assert!(Listed::parse(b"").is_empty());
        assert!(Listed::parse(b"/only/partial").is_empty());
    }

    #[test]
    fn paths_compare_as_paths_and_each_is_listed_once() {
        let l = Listed::parse(b"/srv/app\n/srv/app/a\n/srv//app/a\n/srv/app/b/\n./rel/x\n");
        assert_eq!(l.paths(), 4);
        let mut f = Finder::default();
        for (p, want) in [
            ("/srv/app/a", true),
            ("/srv/app/b", true),
            ("/srv/app/b/", true),
            ("/srv/app//a", true),
            ("/srv/app/c", false),
            ("/srv", false),
            ("/", false),
            ("rel/x", false),
            ("./rel/x", true),
            ("/srv/app", true),
        ] {
            assert_eq!(l.lists(Path::new(p), &mut f), want, "{p}");
            assert_eq!(
                l.lists(Path::new(p), &mut Finder::default()),
                want,
                "{p}, no cache"
            );
        }
        let app = l.find(Path::new("/srv/app")).unwrap();
        assert!(l.is_listed_dir(app));
        assert!(
            !l.is_listed_dir(l.find(Path::new("/srv")).unwrap()),
            "not listed"
        );
        assert_eq!(l.path(l.child(app, b"b").unwrap()), Path::new("/srv/app/b"));
        assert_eq!(l.depth(app), 3);
    }

    #[test]
    fn a_line_holds_a_node_and_its_last_name_only() {
        assert_eq!(std::mem::size_of::<Node>(), 12);
        let lines: String = (0..1000)
            .map(|i| format!("/srv/app/node_modules/pkg-{:02}/f{i:03}.js\n", i % 10))
            .collect();
        let l = Listed::parse(lines.as_bytes());
        assert_eq!(l.paths(), 1000);
        // "/", srv, app, node_modules, 10 packages, 1000 files.
        assert_eq!(l.nodes.len(), 1 + 4 + 10 + 1000);
        assert_eq!(l.names.len(), 1 + 3 + 3 + 12 + 10 * 6 + 1000 * 7);
    }

    #[test]
    fn an_overlong_line_is_skipped_and_counted() {
        let mut bytes = b"/a\n".to_vec();
        bytes.extend(std::iter::repeat_n(b'x', MAX_LINE * 2));
        bytes.extend_from_slice(b"\n/b\n");
        let l = Listed::parse(&bytes);
        assert_eq!(listed_paths(&l), [PathBuf::from("/a"), PathBuf::from("/b")]);
        assert_eq!(l.bytes(), bytes.len() as u64);
    }
}
