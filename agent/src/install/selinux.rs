//! SELinux file contexts: `semanage fcontext` records the rule so it
//! survives relabelling, `restorecon -F` applies it (the `-F` makes user and
//! range take effect, which the official v1 agent missed). On hosts where
//! SELinux is off, contexts are reported as skipped.

use std::path::Path;
use std::process::Command;

use appspec::permissions::SeContext;

/// Is SELinux enabled (selinuxfs mounted with a policy loaded)?
pub fn enabled() -> bool {
    Path::new("/sys/fs/selinux/enforce").exists()
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let shown = format!("{cmd:?}");
    match cmd.output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("cannot run {shown}: {e}")),
    }
}

/// Record and apply `ctx` for `path` (already resolved to a real path).
pub fn apply(path: &Path, ctx: &SeContext) -> Result<(), String> {
    let mut args: Vec<String> = vec!["-t".into(), ctx.type_.clone()];
    if let Some(u) = &ctx.user {
        args.push("-s".into());
        args.push(u.clone());
    }
    if let Some(r) = &ctx.range {
        args.push("-r".into());
        args.push(r.to_string());
    }
    let add = run(Command::new("semanage")
        .args(["fcontext", "-a"])
        .args(&args)
        .arg(path));
    if add.is_err() {
        // A rule left by an interrupted deployment: modify it instead.
        run(Command::new("semanage")
            .args(["fcontext", "-m"])
            .args(&args)
            .arg(path))
        .map_err(|e| add.unwrap_err() + "; " + &e)?;
    }
    run(Command::new("restorecon").arg("-F").arg(path))
}

/// Drop the rule a previous deployment recorded (best effort, as the
/// official agent does).
pub fn remove(path: &Path) {
    if let Err(e) = run(Command::new("semanage").args(["fcontext", "-d"]).arg(path)) {
        tracing::warn!(path = %path.display(), error = %e, "could not remove an SELinux file-context rule");
    }
}
