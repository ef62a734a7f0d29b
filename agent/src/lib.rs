//! The CodeDeploy host agent: everything host-side, as a library so the
//! binary stays a thin command-line shell.

pub mod appspec_file;
pub mod aws;
pub mod command;
pub mod config;
pub mod daemon;
pub mod diagnostics;
pub mod envelope;
pub mod fsutil;
pub mod hooks;
pub mod idle;
pub mod install;
pub mod layout;
pub mod lb_plan;
pub mod links;
pub mod local;
pub mod logfile;
pub mod metrics;
pub mod net;
pub mod revision;
pub mod rmtree;
pub mod sockets;
pub mod spec;
pub mod sys;
pub mod users;
pub mod validate;
