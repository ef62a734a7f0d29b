//! A lifecycle event: its scripts, from the revision the official mapping
//! picks (`hooks`).

use crate::diagnostics::Diagnostics;
use crate::hooks::{self, EventOutcome};

use super::{Deployment, Executor, LifecycleEvent, Report};

pub(super) fn run(
    x: &Executor,
    d: &Deployment,
    event: &LifecycleEvent,
    progress: &mut dyn FnMut(&str),
) -> Result<Report, Diagnostics> {
    match hooks::run_event(event.as_str(), &x.context(d), progress)? {
        EventOutcome::NoScripts(why) => Ok(Report {
            skipped: true,
            summary: why,
            completion: None,
        }),
        EventOutcome::Ran {
            scripts,
            output_left_open,
            from,
        } => {
            let mut s = format!("{scripts} script{}", if scripts == 1 { "" } else { "s" });
            if from != d.dir {
                s.push_str(&format!(" from {}", from.display()));
            }
            if output_left_open > 0 {
                s.push_str(&format!(", {output_left_open} left output open"));
            }
            Ok(Report::done(s))
        }
    }
}
