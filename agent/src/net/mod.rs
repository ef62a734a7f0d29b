//! The agent's own HTTP: one client (TLS, proxy, timeouts), SigV4 signing,
//! endpoint rules, the instance metadata service and the commands API.

pub mod control;
pub mod endpoint;
pub mod http;
pub mod imds;
