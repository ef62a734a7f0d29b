//! Install: copy the revision's files where its appspec says, as the
//! install plan decides (`install`), and record the deployment as the
//! group's last successful one.

use appspec::{events, FileExistsBehavior};

use crate::diagnostics::Diagnostics;
use crate::install;
use crate::layout;

use super::download::count;
use super::{Deployment, Executor, Report};

pub(super) fn run(x: &Executor, d: &Deployment) -> Result<Report, Diagnostics> {
    let spec = &d.spec;
    let archive = layout::archive_dir(&d.dir);
    if !archive.is_dir() {
        return Err(Diagnostics::unknown(format!(
            "the revision is not downloaded ({} is missing); DownloadBundle must run first",
            archive.display()
        )));
    }
    let loaded = d.appspecs.get(&archive, &spec.appspec_filename)?;
    // Every command reads the appspec; Install alone logs its warnings, so
    // each is logged once per deployment.
    loaded.log_warnings();
    let file = loaded.name();
    let appspec = &loaded.spec;
    if let Some(all) = &spec.all_possible_events {
        events::check_hooks_against_deployment(appspec.hook_events(), all, &file)
            .map_err(Diagnostics::unknown)?;
    }
    let behavior =
        FileExistsBehavior::effective(appspec.file_exists_behavior, spec.file_exists_behavior);
    let req = install::Request {
        layout: &x.layout,
        group: &spec.deployment_group_id,
        archive_dir: &archive,
        spec: appspec,
        appspec_file: &file,
        behavior,
        cwd: x.cwd.clone(),
    };
    let out = install::install(&req).map_err(|e| Diagnostics::unknown(e.to_string()))?;
    layout::write_pointer(
        &x.layout.last_successful_pointer(&spec.deployment_group_id),
        &d.dir,
    )
    .map_err(|e| {
        Diagnostics::unknown(format!("cannot record the last successful deployment: {e}"))
    })?;
    tracing::info!(
        deployment = %spec.deployment_id,
        files = out.counts.files,
        dirs = out.counts.dirs_created,
        cleanup_ms = out.cleanup_time.as_millis() as u64,
        install_ms = out.copy_time.as_millis() as u64,
        behavior = behavior.as_str(),
        "install complete"
    );
    Ok(Report::done(summary(&out)))
}

fn summary(out: &install::Outcome) -> String {
    let c = &out.counts;
    let mut s = format!(
        "{}, {} created",
        count(c.files as u64, "file"),
        count(c.dirs_created as u64, "directory")
    );
    if c.replaced > 0 {
        s.push_str(&format!(", {} overwritten", c.replaced));
    }
    if c.kept > 0 {
        s.push_str(&format!(", {} kept (RETAIN)", c.kept));
    }
    if out.applied.permissions > 0 {
        s.push_str(&format!(", permissions on {}", out.applied.permissions));
    }
    if out.applied.contexts_skipped > 0 {
        s.push_str(&format!(
            ", SELinux contexts skipped on {} (SELinux is not enabled)",
            out.applied.contexts_skipped
        ));
    }
    if out.previous_removed > 0 {
        s.push_str(&format!(
            "; removed {} of the previous revision",
            count(out.previous_removed as u64, "path")
        ));
    }
    if !out.previous_kept_dirs.is_empty() {
        s.push_str(&format!(
            ", kept {} directories holding other files",
            out.previous_kept_dirs.len()
        ));
    }
    s
}
