//! Paths of tree nodes taken one after another. Neighbours in a plan or a
//! listing share their directory, so the directory's path is kept and each
//! path costs its last name; building each from the root walked all its
//! ancestors again, once per file (a tenth of an install's single-threaded
//! time at 50,000 files).

use std::ffi::OsStr;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

#[derive(Default)]
pub struct PathCursor {
    /// The directory whose path `buf` starts with, up to `dir_len`.
    dir: Option<u32>,
    buf: Vec<u8>,
    dir_len: usize,
}

impl PathCursor {
    /// The path of `name` in directory `dir`; `dir_path` gives the
    /// directory's path when it is not the last call's.
    pub fn get(&mut self, dir: u32, name: &[u8], dir_path: impl FnOnce() -> PathBuf) -> &Path {
        if self.dir != Some(dir) {
            self.buf = dir_path().into_os_string().into_vec();
            if !self.buf.ends_with(b"/") {
                self.buf.push(b'/');
            }
            self.dir_len = self.buf.len();
            self.dir = Some(dir);
        }
        self.buf.truncate(self.dir_len);
        self.buf.extend_from_slice(name);
        Path::new(OsStr::from_bytes(&self.buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_is_its_directory_and_its_name_as_push_makes_it() {
        let mut c = PathCursor::default();
        let mut built = 0;
        let mut dir = |p: &str| {
            built += 1;
            PathBuf::from(p)
        };
        assert_eq!(c.get(1, b"a", || dir("/")), Path::new("/a"));
        assert_eq!(c.get(2, b"x", || dir("/srv/www")), Path::new("/srv/www/x"));
        assert_eq!(c.get(2, b"yy", || dir("unused")), Path::new("/srv/www/yy"));
        assert_eq!(c.get(2, b"z", || dir("unused")), Path::new("/srv/www/z"));
        assert_eq!(c.get(3, b"f", || dir("/srv/www/")), Path::new("/srv/www/f"));
        assert_eq!(
            built, 3,
            "a directory's path is built once per run of its files"
        );
        for (base, name) in [("/", "a"), ("/srv/www", "x"), ("/srv/www/", "f")] {
            let mut c = PathCursor::default();
            assert_eq!(
                c.get(0, name.as_bytes(), || base.into()),
                Path::new(base).join(name)
            );
        }
    }
}
