//! Differential runs: the same bundle deployed by this agent's `local` and
//! by the official `codedeploy-local`, each in a root of its own, and what
//! each left compared: the installed tree (types, contents, modes, owners),
//! the hooks that ran with their environment, the exit status, and the
//! records under `deployment-instructions/`. Paths and deployment ids are
//! normalised; nothing else is.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::bundle::Bundle;
use crate::{agent_bin, oracle, run_with_deadline, Run};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    Ours,
    Official,
}

/// What is compared after each deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Aspect {
    Exit,
    Tree,
    Hooks,
    Records,
}

/// A deliberate difference: the aspects it shows in, and why it is there.
pub struct Known {
    pub aspects: &'static [Aspect],
    pub why: &'static str,
}

/// One deployment's observations, aspect by aspect.
pub type Observation = BTreeMap<Aspect, String>;

/// One side of a differential run: a throwaway host for one tool.
pub struct Side {
    pub tool: Tool,
    base: tempfile::TempDir,
    conf: PathBuf,
    bundles: usize,
    pub seen: Vec<Observation>,
    pub runs: Vec<Run>,
}

/// The recording hook every case can use: appends the event and what the
/// official agents give a script to `<out>/hooks.log`.
pub fn recorder(out: &Path) -> String {
    format!(
        "#!/bin/sh\necho \"$LIFECYCLE_EVENT app=$APPLICATION_NAME dg=$DEPLOYMENT_GROUP_NAME dgid=$DEPLOYMENT_GROUP_ID id=$DEPLOYMENT_ID user=$(id -un) args=$#\" >> {}/hooks.log\n",
        out.display()
    )
}

impl Side {
    pub fn new(tool: Tool) -> Side {
        let base = tempfile::Builder::new()
            .prefix(match tool {
                Tool::Ours => "cd-diff-ours-",
                Tool::Official => "cd-diff-official-",
            })
            .tempdir()
            .expect("tempdir");
        fs::set_permissions(
            base.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod");
        let p = base.path();
        for d in ["root", "log", "pid", "out"] {
            fs::create_dir_all(p.join(d)).expect("mkdir");
        }
        let conf = p.join("agent.yml");
        fs::write(
            &conf,
            format!(
                ":root_dir: {0}/root\n:log_dir: {0}/log\n:pid_dir: {0}/pid\n:on_premises_config_file: {0}/no-onpremises.yml\n:hook_kill_grace_seconds: 1\n",
                p.display()
            ),
        )
        .expect("config");
        Side {
            tool,
            base,
            conf,
            bundles: 0,
            seen: Vec::new(),
            runs: Vec::new(),
        }
    }

    pub fn base(&self) -> &Path {
        self.base.path()
    }

    /// Where cases install: `<base>/dest`.
    pub fn dest(&self) -> PathBuf {
        self.base().join("dest")
    }

    /// Where hooks write: `<base>/out`.
    pub fn out(&self) -> PathBuf {
        self.base().join("out")
    }

    /// A fresh bundle directory.
    pub fn bundle(&mut self) -> Bundle {
        self.bundles += 1;
        Bundle::new(self.base().join(format!("bundle{}", self.bundles)))
    }

    /// Deploy `b` as `kind` (directory, tgz, tar, zip, or `tgz-wrapped`:
    /// inside one top-level directory) with `args`, then observe.
    pub fn deploy(&mut self, b: &Bundle, kind: &str, args: &[&str]) -> &Run {
        let n = self.runs.len();
        let (loc, t) = match kind {
            "directory" => (b.dir.clone(), "directory"),
            "tgz" => (b.tgz(&self.base().join(format!("b{n}.tgz"))), "tgz"),
            "tgz-wrapped" => (
                b.tgz_with_prefix(&self.base().join(format!("b{n}.tgz")), "app/"),
                "tgz",
            ),
            "tar" => (b.tar(&self.base().join(format!("b{n}.tar"))), "tar"),
            "zip" => (b.zip(&self.base().join(format!("b{n}.zip"))), "zip"),
            other => panic!("unknown bundle kind {other}"),
        };
        let mut cmd = match self.tool {
            Tool::Ours => {
                let mut c = Command::new(agent_bin());
                c.arg("local");
                c
            }
            Tool::Official => Command::new(oracle::ruby_local()),
        };
        cmd.arg("-c")
            .arg(&self.conf)
            .arg("-l")
            .arg(&loc)
            .args(["-t", t])
            .args(args)
            .current_dir(self.base());
        let run = run_with_deadline(&mut cmd, Duration::from_secs(180));
        let obs = self.observe(&run);
        self.seen.push(obs);
        self.runs.push(run);
        self.runs.last().expect("run")
    }

    fn observe(&self, run: &Run) -> Observation {
        let mut o = Observation::new();
        o.insert(Aspect::Exit, format!("success={}", run.status.success()));
        o.insert(Aspect::Tree, self.norm(&tree(&self.dest())));
        let hooks = fs::read_to_string(self.out().join("hooks.log")).unwrap_or_default();
        o.insert(Aspect::Hooks, self.norm(&hooks));
        o.insert(
            Aspect::Records,
            self.norm(&records(&self.base().join("root"))),
        );
        o
    }

    /// Paths of this side and random deployment ids made comparable.
    fn norm(&self, s: &str) -> String {
        let s = s.replace(&self.base().display().to_string(), "@BASE");
        let re = regex_lite::Regex::new(r"d-[A-Z0-9]{9}-local").expect("regex");
        re.replace_all(&s, "d-@ID-local").into_owned()
    }
}

/// Every entry under `dir`: kind, mode, owner, and content or target.
pub fn tree(dir: &Path) -> String {
    let mut lines = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(m) = fs::symlink_metadata(&p) else {
                continue;
            };
            let rel = p.strip_prefix(dir).unwrap_or(&p).display().to_string();
            let who = format!("{:o} {}:{}", m.mode() & 0o7777, m.uid(), m.gid());
            let what = if m.is_dir() {
                stack.push(p.clone());
                format!("dir {who}")
            } else if m.file_type().is_symlink() {
                let t = fs::read_link(&p).unwrap_or_default();
                format!("link -> {}", t.display())
            } else if m.is_file() {
                let c = fs::read(&p).unwrap_or_default();
                format!("file {who} {:?}", String::from_utf8_lossy(&c))
            } else {
                format!("other {who}")
            };
            lines.push(format!("{rel}: {what}"));
        }
    }
    lines.sort();
    lines.join("\n")
}

/// The records the next deployment (by either agent) reads.
fn records(root: &Path) -> String {
    let dir = root.join("deployment-instructions");
    let mut names: Vec<String> = fs::read_dir(&dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                // Not records: this agent's per-group lock (README).
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    let mut out = String::new();
    for n in names {
        let text = fs::read_to_string(dir.join(&n)).unwrap_or_default();
        // Entries in order of a sort: the official agent lists a directory's
        // entries in readdir order (Ruby's Dir.entries), this agent sorted;
        // both put a directory before its contents, which is what matters
        // when a cleanup file is replayed.
        let text = match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(v) if n.ends_with(".json") => {
                let mut items: Vec<String> = v["instructions"]
                    .as_array()
                    .map(|a| a.iter().map(|i| i.to_string()).collect())
                    .unwrap_or_default();
                items.sort();
                items.join("\n")
            }
            _ if n.ends_with("-cleanup") => {
                let mut lines: Vec<&str> = text.lines().collect();
                lines.sort();
                lines.join("\n")
            }
            _ => text,
        };
        out.push_str(&format!("== {n}\n{text}\n"));
    }
    out
}

/// Run `case` on both sides and compare. `known` lists the aspects that
/// differ on purpose, each with its reason: those must differ in at least
/// one deployment of the case (so the list stays true); every other aspect
/// must be equal after every deployment.
pub fn differential(known: &[Known], case: impl Fn(&mut Side)) {
    let known: Vec<(Aspect, &str)> = known
        .iter()
        .flat_map(|k| k.aspects.iter().map(|a| (*a, k.why)))
        .collect();
    crate::require_root();
    let mut ours = Side::new(Tool::Ours);
    let mut official = Side::new(Tool::Official);
    case(&mut ours);
    case(&mut official);
    assert_eq!(
        ours.seen.len(),
        official.seen.len(),
        "same number of deployments"
    );
    let mut problems = Vec::new();
    for (i, (a, b)) in ours.seen.iter().zip(&official.seen).enumerate() {
        for (aspect, mine) in a {
            let theirs = &b[aspect];
            let expected_difference = known.iter().find(|(k, _)| k == aspect);
            match (mine == theirs, expected_difference) {
                (true, None) | (false, Some(_)) => {}
                (false, None) => problems.push(format!(
                    "deployment {i}, {aspect:?} differs\n--- ours\n{mine}\n--- official\n{theirs}\n--- our output\n{}\n--- official output\n{}",
                    ours.runs[i].stdout, official.runs[i].stdout
                )),
                (true, Some(_)) => {}
            }
        }
    }
    // A known difference must show in at least one deployment of the case.
    for (aspect, why) in &known {
        let differs = ours
            .seen
            .iter()
            .zip(&official.seen)
            .any(|(a, b)| a[aspect] != b[aspect]);
        if !differs {
            problems.push(format!("{aspect:?} never differs, yet is listed: {why}"));
        }
    }
    problems.dedup();
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}
