//! Revisions for tests: a bundle directory written file by file, and the
//! same bundle packed as tar, tgz or zip (modes and symlinks kept).

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// An appspec with one `files` mapping of `source` to `destination`.
pub fn single_mapping(source: &str, destination: &Path) -> String {
    format!(
        "version: 0.0\nos: linux\nfiles:\n  - source: {source}\n    destination: {}\n",
        destination.display()
    )
}

pub struct Bundle {
    pub dir: PathBuf,
}

impl Bundle {
    /// A new bundle directory at `dir` (created).
    pub fn new(dir: impl Into<PathBuf>) -> Bundle {
        let dir = dir.into();
        fs::create_dir_all(&dir).expect("create bundle dir");
        Bundle { dir }
    }

    pub fn file(&self, rel: &str, content: &str) -> &Bundle {
        let p = self.dir.join(rel);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(&p, content).expect("write");
        self
    }

    pub fn mode(&self, rel: &str, mode: u32) -> &Bundle {
        fs::set_permissions(self.dir.join(rel), fs::Permissions::from_mode(mode)).expect("chmod");
        self
    }

    /// An executable shell script.
    pub fn script(&self, rel: &str, body: &str) -> &Bundle {
        self.file(rel, &format!("#!/bin/bash\n{body}\n"));
        self.mode(rel, 0o755)
    }

    pub fn symlink(&self, rel: &str, target: &str) -> &Bundle {
        let p = self.dir.join(rel);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::os::unix::fs::symlink(target, p).expect("symlink");
        self
    }

    pub fn appspec(&self, text: &str) -> &Bundle {
        self.file("appspec.yml", text)
    }

    fn walk(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            let mut entries: Vec<_> = fs::read_dir(self.dir.join(&rel))
                .expect("read_dir")
                .flatten()
                .collect();
            entries.sort_by_key(|e| e.file_name());
            for e in entries {
                let r = rel.join(e.file_name());
                if e.file_type().expect("type").is_dir() {
                    stack.push(r.clone());
                }
                out.push(r);
            }
        }
        out.sort();
        out
    }

    fn tar_into<W: Write>(&self, w: W, prefix: &str) -> W {
        let mut b = tar::Builder::new(w);
        b.follow_symlinks(false);
        for rel in self.walk() {
            let full = self.dir.join(&rel);
            let name = Path::new(prefix).join(&rel);
            b.append_path_with_name(&full, &name).expect("append");
        }
        b.into_inner().expect("finish tar")
    }

    pub fn tar(&self, out: &Path) -> PathBuf {
        self.tar_into(File::create(out).expect("create"), "");
        out.to_path_buf()
    }

    pub fn tgz(&self, out: &Path) -> PathBuf {
        self.tgz_with_prefix(out, "")
    }

    /// The bundle inside one top-level directory, as `tar czf x.tgz app/` makes.
    pub fn tgz_with_prefix(&self, out: &Path, prefix: &str) -> PathBuf {
        let gz = flate2::write::GzEncoder::new(
            File::create(out).expect("create"),
            flate2::Compression::fast(),
        );
        self.tar_into(gz, prefix).finish().expect("finish gzip");
        out.to_path_buf()
    }

    pub fn zip(&self, out: &Path) -> PathBuf {
        let mut z = zip::ZipWriter::new(File::create(out).expect("create"));
        for rel in self.walk() {
            let full = self.dir.join(&rel);
            let md = fs::symlink_metadata(&full).expect("stat");
            let name = rel.to_string_lossy().into_owned();
            let opts =
                zip::write::SimpleFileOptions::default().unix_permissions(md.mode() & 0o7777);
            if md.is_dir() {
                z.add_directory(format!("{name}/"), opts).expect("dir");
            } else if md.file_type().is_symlink() {
                let target = fs::read_link(&full).expect("readlink");
                z.add_symlink(name, target.to_string_lossy(), opts)
                    .expect("symlink");
            } else {
                z.start_file(name, opts).expect("file");
                z.write_all(&fs::read(&full).expect("read")).expect("write");
            }
        }
        z.finish().expect("finish zip");
        out.to_path_buf()
    }
}
