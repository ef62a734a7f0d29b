//! The CodeDeploy `appspec.yml` model for EC2/on-premises deployments:
//! parse, validate, explain. Pure: takes text, returns values.
//!
//! Documents are accepted and rejected as the official agent does, with the
//! YAML 1.1 reading of Ruby's Psych, and every problem is reported with the
//! file, line, column and field. Hostile input is bounded: the document's
//! size (`MAX_APPSPEC_BYTES`), its node count, depth and alias expansion.
//!
//! ```
//! use appspec::{parse, Os};
//!
//! let text = "\
//! version: 0.0
//! os: linux
//! files:
//!   - source: /
//!     destination: /srv/app
//! hooks:
//!   ApplicationStart:
//!     - location: scripts/start.sh
//!       timeout: 60
//!       runas: app
//! ";
//! let parsed = parse(text, "appspec.yml", Os::Linux).unwrap();
//! let start = &parsed.spec.scripts("ApplicationStart")[0];
//! assert_eq!((start.location.as_str(), start.timeout), ("scripts/start.sh", 60));
//!
//! // Every problem names the file, the line and the field.
//! let bad = parse("version: 0.0\nos: linux\nhooks:\n  ApplicationStart:\n    - timeout: 5\n", "appspec.yml", Os::Linux)
//!     .unwrap_err()
//!     .to_string();
//! assert!(bad.contains("appspec.yml:5"), "{bad}");
//! assert!(bad.contains("location"), "{bad}");
//!
//! // The lifecycle's names are typed once, where a command arrives.
//! use appspec::events::{HostCommand, LifecycleEvent};
//! assert!(HostCommand::parse("ValidateService").is(&LifecycleEvent::ValidateService));
//! ```

#![deny(missing_docs)]

mod diag;
pub mod events;
mod fields;
pub mod load_balancer;
mod model;
mod parse;
pub mod permissions;
pub mod yaml;

pub use diag::{Diagnostic, Errors, Severity};
pub use load_balancer::LoadBalancer;
pub use model::*;
pub use parse::{check, parse, Checked, Parsed};

/// The names the official agent looks for, in order, when a deployment does
/// not name its appspec file.
pub const DEFAULT_NAMES: [&str; 2] = ["appspec.yml", "appspec.yaml"];

/// The names an appspec is looked for under, in the official agent's order
/// (Ruby `app_spec_real_path`): the deployment's name, else `appspec.yaml`,
/// else `appspec.yml`. The one list every reader uses.
pub fn candidates(requested: &str) -> Vec<&str> {
    let mut v = vec![requested];
    for n in ["appspec.yaml", "appspec.yml"] {
        if n != requested {
            v.push(n);
        }
    }
    v
}

/// The largest appspec read (it is read whole into memory; honest ones are
/// a few kilobytes, and 1.5 MB of comments is still read to its end).
pub const MAX_APPSPEC_BYTES: u64 = 64 << 20;

#[cfg(test)]
mod tests;
