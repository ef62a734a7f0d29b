//! The official agent as an oracle: where its artefacts are (the
//! project's shared oracle directory) and what the testbed reads from them.
//! Nothing of it is copied into this repository; it is read at test time.

use std::io::Read;
use std::path::PathBuf;
use std::sync::OnceLock;

/// `$CODEDEPLOY_ORACLE_DIR`, else `shared/oracle` beside the checkout.
pub fn dir() -> PathBuf {
    let d = match std::env::var("CODEDEPLOY_ORACLE_DIR") {
        Ok(d) => PathBuf::from(d),
        Err(_) => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/oracle"),
    };
    assert!(
        d.join("setup").is_file(),
        "the official agent oracle is not at {}: check out the project's shared/ beside this repository, or set CODEDEPLOY_ORACLE_DIR",
        d.display()
    );
    d
}

const TARBALL: &str = "aws-codedeploy-agent-1.8.1.tar.gz";
const APIS: &str = "vendor/gems/codedeploy-commands-1.0.0/apis/";

/// The commands API service models of the official agent 1.8.1, by file
/// name (`CodeDeployCommand.api.json`, `CodeDeployCommandSecure.api.json`),
/// read from its tarball once per process.
pub fn service_model(name: &str) -> &'static serde_json::Value {
    static MODELS: OnceLock<Vec<(String, serde_json::Value)>> = OnceLock::new();
    let models = MODELS.get_or_init(|| {
        let path = dir().join(TARBALL);
        let f = std::fs::File::open(&path).unwrap_or_else(|e| {
            panic!(
                "the official agent's service models are read from {}: {e} (set CODEDEPLOY_ORACLE_DIR)",
                path.display()
            )
        });
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(f));
        let mut out = Vec::new();
        for entry in ar.entries().expect("oracle tarball") {
            let mut entry = entry.expect("oracle tarball entry");
            let p = entry.path().expect("entry path").display().to_string();
            let Some(file) = p.split_once(APIS).map(|(_, f)| f.to_string()) else {
                continue;
            };
            if !file.ends_with(".api.json") {
                continue;
            }
            let mut text = String::new();
            entry.read_to_string(&mut text).expect("model text");
            out.push((file, serde_json::from_str(&text).expect("model JSON")));
        }
        out
    });
    models
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, m)| m)
        .unwrap_or_else(|| panic!("no service model {name} in the oracle tarball"))
}

/// The official Ruby agent's `codedeploy-local` (the oracle's wrapper).
pub fn ruby_local() -> PathBuf {
    dir().join("codedeploy-local")
}

/// The official Ruby agent's CommandPoller as a drop-in for the agent
/// binary in daemon tests (`agent-bin --config_file FILE run`).
pub fn ruby_agent_bin() -> PathBuf {
    dir().join("agent-bin")
}
