//! The CodeDeploy `appspec.yml` model for EC2/on-premises deployments:
//! parse, validate, explain. Pure: takes text, returns values.
//!
//! Documents are accepted and rejected as the official agent does, with the
//! YAML 1.1 reading of Ruby's Psych, and every problem is reported with the
//! file, line, column and field.

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
pub use parse::{parse, Parsed};

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
