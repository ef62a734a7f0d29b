//! The previous revision is kept until the new one is in place, in a backup
//! directory beside the nearest directory that stays (one not listed in the
//! cleanup file), so no byte is copied and no space is needed:
//! - a directory of ours that holds only what is ours (the usual case: the
//!   whole application tree) is moved there in one rename, and moved back
//!   on failure;
//! - every other file of ours gets a hard link there, and the modes and
//!   owners of the directories around them are noted.
//!
//! If the install then fails for any reason (ENOSPC or EDQUOT
//! midway, a file that cannot be written), the new files are removed and the
//! previous ones put back, with the previous cleanup file; on success the
//! backups go. The backups are listed in the cleanup file before they are
//! made, so a crash at any point leaves nothing the next deployment does not
//! remove.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::ledger;
use super::listed::{Listed, ROOT};
use crate::fsutil;

/// Backup directories are named so (one per directory that stays).
const BACKUP: &str = ".codedeploy-previous";
/// Directories moved whole into a backup directory are named `t<N>`.
const TREE_PREFIX: &str = "t";

struct Dir {
    path: PathBuf,
    mode: u32,
    uid: u32,
    gid: u32,
}

pub struct Kept {
    /// (original, backup) for every previous file and symlink kept.
    links: Vec<(PathBuf, PathBuf)>,
    /// (original, backup) for every directory moved aside whole.
    trees: Vec<(PathBuf, PathBuf)>,
    backups: Vec<PathBuf>,
    dirs: Vec<Dir>,
}

impl Kept {
    /// Every path this adds to the host, for the cleanup file.
    pub fn listed(&self) -> impl Iterator<Item = &Path> {
        self.backups
            .iter()
            .map(PathBuf::as_path)
            .chain(self.links.iter().map(|(_, b)| b.as_path()))
            .chain(self.trees.iter().map(|(_, b)| b.as_path()))
    }

    /// The install succeeded: drop the backups.
    pub fn release(self) {
        for b in &self.backups {
            if let Err(e) = fsutil::remove_tree(b) {
                tracing::warn!(path = %b.display(), error = %e, "cannot remove the previous revision's backup; the next deployment's cleanup will");
            }
        }
    }

    /// The install failed: put the previous revision back, and its cleanup
    /// file as it was read.
    pub fn restore(self, previous: &ledger::Previous) -> io::Result<usize> {
        let mut dirs: Vec<&Dir> = self.dirs.iter().collect();
        dirs.sort_by_key(|d| d.path.components().count());
        for d in dirs {
            match fs::create_dir(&d.path) {
                Ok(()) => {
                    std::os::unix::fs::lchown(&d.path, Some(d.uid), Some(d.gid))?;
                    fs::set_permissions(&d.path, fs::Permissions::from_mode(d.mode))?;
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        let mut restored = 0;
        for (orig, backup) in &self.trees {
            restored += move_back(backup, orig);
        }
        for (orig, backup) in &self.links {
            match fs::rename(backup, orig) {
                Ok(()) => restored += 1,
                Err(e) => {
                    tracing::warn!(path = %orig.display(), error = %e, "cannot put back a file of the previous revision")
                }
            }
        }
        for b in &self.backups {
            let _ = fsutil::remove_tree(b);
        }
        previous.restore()?;
        Ok(restored)
    }
}

/// A listed directory is whole when it is a real directory on its parent's
/// filesystem, every entry in it is listed, and every directory in it is
/// whole: nothing of anyone else's is inside, so it can move aside in one
/// rename. Each candidate is listed once, on every core (that is most of
/// the time of keeping a large tree); then the verdicts go deepest first.
fn whole_dirs(listed: &mut Listed) {
    // Only a parent of another listed path can be a whole directory (an
    // empty one is kept the other way), so only those are looked at.
    let mut dirs: Vec<u32> = listed
        .listed()
        .filter(|&i| listed.is_listed_dir(i))
        .collect();
    dirs.sort_by_cached_key(|&d| std::cmp::Reverse(listed.depth(d)));
    let view: &Listed = listed;
    let looked =
        fsutil::parallel_fold(dirs.len(), fsutil::workers(), 64, Vec::new, |out, range| {
            out.extend(range.map(|i| (i, look_inside(view, dirs[i]))));
            Ok::<(), std::convert::Infallible>(())
        })
        .unwrap_or_else(|never| match never {});
    let mut inside: Vec<Option<Inside>> = (0..dirs.len()).map(|_| None).collect();
    for (i, v) in looked.into_iter().flatten() {
        inside[i] = v;
    }
    let devs: HashMap<u32, u64> = dirs
        .iter()
        .zip(&inside)
        .filter_map(|(d, v)| Some((*d, v.as_ref()?.dev)))
        .collect();
    for (&d, v) in dirs.iter().zip(&inside) {
        let Some(v) = v else { continue };
        // A directory inside: whole itself (decided deeper first), and not
        // a mount point.
        let all_whole = v
            .subdirs
            .iter()
            .all(|c| devs.get(c) == Some(&v.dev) && listed.is_whole(*c));
        if all_whole {
            listed.set_whole(d);
        }
    }
}

/// A candidate directory whose every entry is listed: its device, and its
/// subdirectories.
struct Inside {
    dev: u64,
    subdirs: Vec<u32>,
}

/// `None` when `d` is not a real directory or holds anything not listed.
fn look_inside(listed: &Listed, d: u32) -> Option<Inside> {
    use std::os::unix::ffi::OsStrExt;
    let path = listed.path(d);
    let m = fs::symlink_metadata(&path).ok().filter(|m| m.is_dir())?;
    let mut subdirs = Vec::new();
    for e in fs::read_dir(&path).ok()? {
        let e = e.ok()?;
        let child = listed
            .child(d, e.file_name().as_bytes())
            .filter(|&c| listed.is_listed(c))?;
        if e.file_type().ok()?.is_dir() {
            subdirs.push(child);
        }
    }
    Some(Inside {
        dev: m.dev(),
        subdirs,
    })
}

/// Put a moved directory back; if the failed install left a directory at
/// its place (something not ours was put there meanwhile), merge into it.
/// Returns how many directories and files went back.
fn move_back(backup: &Path, orig: &Path) -> usize {
    match fs::rename(backup, orig) {
        Ok(()) => return 1,
        Err(e)
            if e.kind() != io::ErrorKind::DirectoryNotEmpty
                && e.kind() != io::ErrorKind::AlreadyExists =>
        {
            tracing::warn!(path = %orig.display(), error = %e, "cannot put back a directory of the previous revision");
            return 0;
        }
        Err(_) => {}
    }
    let Ok(rd) = fs::read_dir(backup) else {
        return 0;
    };
    let mut n = 0;
    for e in rd.flatten() {
        let (from, to) = (e.path(), orig.join(e.file_name()));
        let both_dirs = e.file_type().is_ok_and(|t| t.is_dir())
            && fs::symlink_metadata(&to).is_ok_and(|m| m.is_dir());
        if both_dirs {
            n += move_back(&from, &to);
        } else if let Err(err) = fs::rename(&from, &to) {
            tracing::warn!(path = %to.display(), error = %err, "cannot put back a file of the previous revision");
        } else {
            n += 1;
        }
    }
    n
}

/// What goes into one backup directory: files to link, and directories
/// (with their nodes) to move whole.
type Backup = (Vec<PathBuf>, Vec<(u32, PathBuf)>);

/// Keep the previous revision that `listed` (the cleanup file) lists, and
/// mark in it what moved aside whole. The backups are appended to the
/// cleanup file before they exist.
pub fn keep(listed: &mut Listed, cleanup_path: &Path) -> io::Result<Kept> {
    whole_dirs(listed);
    let mut plan: BTreeMap<PathBuf, Backup> = BTreeMap::new();
    let mut dirs = Vec::new();
    for id in listed.listed() {
        if listed.is_whole(listed.parent(id)) {
            continue; // moves with its directory
        }
        // The nearest ancestor that is not ours stays through the cleanup.
        // A path whose every ancestor is listed (`/` itself, or a relative
        // path, which no install writes) is not kept.
        let mut anchor = listed.parent(id);
        while anchor != ROOT && listed.is_listed(anchor) {
            anchor = listed.parent(anchor);
        }
        if anchor == ROOT {
            continue;
        }
        let slot = plan.entry(listed.path(anchor).join(BACKUP)).or_default();
        let p = listed.path(id);
        if listed.is_whole(id) {
            slot.1.push((id, p));
            continue;
        }
        let Ok(m) = fs::symlink_metadata(&p) else {
            continue;
        };
        if m.is_dir() {
            dirs.push(Dir {
                path: p,
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
            });
            continue;
        }
        slot.0.push(p);
    }
    let mut kept = Kept {
        links: Vec::new(),
        trees: Vec::new(),
        backups: Vec::new(),
        dirs,
    };
    let mut names = Vec::new();
    for (backup, (files, trees)) in &plan {
        names.push(backup.clone());
        names.extend((0..files.len()).map(|i| backup.join(i.to_string())));
        names.extend((0..trees.len()).map(|i| backup.join(tree_name(i))));
    }
    // Listed first: a crash from here on leaves them to the next cleanup.
    let mut w = ledger::Writer::append(cleanup_path)?;
    for n in &names {
        w.path(n)?;
    }
    w.finish()?;
    for (backup, (files, trees)) in plan {
        make_backup_dir(&backup)?;
        for (i, f) in files.into_iter().enumerate() {
            let b = backup.join(i.to_string());
            match fs::hard_link(&f, &b) {
                Ok(()) => kept.links.push((f, b)),
                // Another filesystem below a directory of ours: this file
                // cannot be put back if the install fails.
                Err(e) => {
                    tracing::warn!(path = %f.display(), error = %e, "cannot keep a file of the previous revision")
                }
            }
        }
        for (i, (id, t)) in trees.into_iter().enumerate() {
            let b = backup.join(tree_name(i));
            match fs::rename(&t, &b) {
                Ok(()) => {
                    listed.set_moved(id);
                    kept.trees.push((t, b));
                }
                Err(e) => {
                    tracing::warn!(path = %t.display(), error = %e, "cannot keep a directory of the previous revision")
                }
            }
        }
        kept.backups.push(backup);
    }
    Ok(kept)
}

fn make_backup_dir(backup: &Path) -> io::Result<()> {
    match fs::create_dir(backup) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            // A crashed run's backup: the cleanup file lists it too.
            fsutil::remove_tree(backup)?;
            fs::create_dir(backup)?;
        }
        Err(e) => return Err(e),
    }
    fs::set_permissions(backup, fs::Permissions::from_mode(0o700))
}

/// A moved directory's name in its backup directory; files are numbers.
fn tree_name(i: usize) -> String {
    format!("{TREE_PREFIX}{i}")
}

/// Is `p` a directory this module moved aside (by its name)? The next
/// cleanup removes such a directory whole if a crash left it behind.
pub fn is_moved_tree(p: &Path) -> bool {
    let parent_is_backup = p
        .parent()
        .and_then(Path::file_name)
        .is_some_and(|n| n == BACKUP);
    let name = p.file_name().map(|n| n.as_encoded_bytes()).unwrap_or(b"");
    parent_is_backup
        && name
            .strip_prefix(TREE_PREFIX.as_bytes())
            .is_some_and(|n| !n.is_empty() && n.iter().all(u8::is_ascii_digit))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `app` is all ours (moves whole); `www` holds a file of the operator's
    /// (its files are linked one by one).
    fn previous(root: &Path) -> Vec<u8> {
        let mut listed = Vec::new();
        for d in ["app", "app/lib", "app/lib/x", "www"] {
            fs::create_dir(root.join(d)).unwrap();
            listed.push(root.join(d));
        }
        for f in [
            "app/a.js",
            "app/lib/b.js",
            "app/lib/x/c.js",
            "www/index.html",
        ] {
            fs::write(root.join(f), f).unwrap();
            listed.push(root.join(f));
        }
        fs::write(root.join("www/operator.conf"), "theirs").unwrap();
        let mut raw = Vec::new();
        for p in &listed {
            raw.extend_from_slice(p.as_os_str().as_encoded_bytes());
            raw.push(b'\n');
        }
        raw
    }

    /// What a directory holds, by name, sorted.
    fn names_in(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_tree_of_ours_moves_whole_and_comes_back() {
        let d = tempfile::tempdir().unwrap();
        let cleanup = d.path().join("cleanup");
        let raw = previous(d.path());
        let mut listed = Listed::parse(&raw);
        fs::write(&cleanup, &raw).unwrap();
        let kept = keep(&mut listed, &cleanup).unwrap();
        assert_eq!(kept.trees.len(), 1, "app moved in one rename");
        assert!(!d.path().join("app").exists());
        assert_eq!(kept.links.len(), 1, "www/index.html linked");
        let rep = ledger::replay(&listed, 2).unwrap();
        assert_eq!(rep.moved, 6, "app and all below went with it");
        assert_eq!(rep.removed, 1, "www/index.html; www holds a file not ours");
        assert!(d.path().join("www/operator.conf").exists());
        // The install starts its cleanup file, then fails: the previous
        // one comes back from the disk, as it was read.
        let aside = d.path().join("cleanup.previous");
        let prev = ledger::Previous::claim(&cleanup, &aside, listed.bytes()).unwrap();
        let mut w = prev.start_new(kept.listed()).unwrap();
        w.path(Path::new("/srv/new/file")).unwrap();
        w.finish().unwrap();
        assert!(fs::read(&cleanup).unwrap().ends_with(b"/srv/new/file\n"));
        kept.restore(&prev).unwrap();
        assert!(!aside.exists());
        assert_eq!(
            fs::read(d.path().join("app/lib/x/c.js")).unwrap(),
            b"app/lib/x/c.js"
        );
        assert_eq!(
            fs::read(d.path().join("www/index.html")).unwrap(),
            b"www/index.html"
        );
        assert_eq!(fs::read(&cleanup).unwrap(), raw);
        assert!(!d.path().join(BACKUP).exists());
    }

    #[test]
    fn a_crash_after_the_move_leaves_nothing_the_next_cleanup_misses() {
        let d = tempfile::tempdir().unwrap();
        let cleanup = d.path().join("cleanup");
        let raw = previous(d.path());
        fs::write(&cleanup, &raw).unwrap();
        let kept = keep(&mut Listed::parse(&raw), &cleanup).unwrap();
        std::mem::forget(kept); // the process dies here
        let after = fs::read(&cleanup).unwrap();
        ledger::replay(&Listed::parse(&after), 2).unwrap();
        assert_eq!(
            names_in(d.path()),
            ["cleanup", "www"],
            "backups and the moved tree are gone"
        );
        assert!(d.path().join("www/operator.conf").exists());
    }

    #[test]
    fn a_crash_after_the_new_cleanup_file_started_leaves_nothing_behind_either() {
        let d = tempfile::tempdir().unwrap();
        let cleanup = d.path().join("cleanup");
        let raw = previous(d.path());
        fs::write(&cleanup, &raw).unwrap();
        let mut listed = Listed::parse(&raw);
        let kept = keep(&mut listed, &cleanup).unwrap();
        ledger::replay(&listed, 2).unwrap();
        let aside = d.path().join("cleanup.previous");
        let prev = ledger::Previous::claim(&cleanup, &aside, listed.bytes()).unwrap();
        let w = prev.start_new(kept.listed()).unwrap();
        std::mem::forget((kept, w)); // the process dies here
        fs::remove_file(&aside).unwrap(); // as the next command's sweep does
        let after = fs::read(&cleanup).unwrap();
        ledger::replay(&Listed::parse(&after), 2).unwrap();
        assert_eq!(
            names_in(d.path()),
            ["cleanup", "www"],
            "the backups are listed, and gone"
        );
        assert!(d.path().join("www/operator.conf").exists());
    }

    #[test]
    fn a_foreign_file_deep_in_a_large_tree_keeps_only_its_ancestors_in_place() {
        // Enough directories that they are looked at on several threads.
        let d = tempfile::tempdir().unwrap();
        let app = d.path().join("app");
        let mut raw = Vec::new();
        let mut list = |p: &Path| {
            raw.extend_from_slice(p.as_os_str().as_encoded_bytes());
            raw.push(b'\n');
        };
        fs::create_dir(&app).unwrap();
        list(&app);
        for i in 0..150 {
            let sub = app.join(format!("d{i:03}/sub"));
            fs::create_dir_all(&sub).unwrap();
            fs::write(sub.join("f.js"), "ours").unwrap();
            for p in [sub.parent().unwrap(), &sub, &sub.join("f.js")] {
                list(p);
            }
        }
        fs::write(app.join("d077/sub/operator.conf"), "theirs").unwrap();
        let mut listed = Listed::parse(&raw);
        whole_dirs(&mut listed);
        let whole = |p: &Path| listed.find(p).is_some_and(|i| listed.is_whole(i));
        for p in [app.clone(), app.join("d077"), app.join("d077/sub")] {
            assert!(!whole(&p), "{} holds a file not ours", p.display());
        }
        assert!(whole(&app.join("d000")));
        assert!(whole(&app.join("d149/sub")));
        let count = listed.ids().filter(|&i| listed.is_whole(i)).count();
        assert_eq!(count, 149 * 2);
    }
}
