//! Benchmark (not a test): a large tgz from S3 (moto, behind the testbed's
//! proxy) installed by the daemon's own DownloadBundle, which unpacks while
//! the ranged parts arrive, against its floors measured in the same run:
//! the same download alone and the same unpack alone, by the agent's own
//! code (`RemoteFetcher`, `revision::unpack`), and GNU tar beside them.
//!
//!   cargo run --release -p testbed --example s3_pipeline_bench -- [MiB] [runs]
//!
//! Defaults: 1024 MiB of incompressible data (a tgz of about that size), 3
//! runs. Goal: DownloadBundle at most 1.2x the longer of the two floors.
//! On-premises, so no early fetch for a `loadBalancer` section takes part.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use codedeploy_agent::command::Fetcher;
use codedeploy_agent::{aws, config::Config, net, revision, spec};
use testbed::bed::Testbed;
use testbed::scenario::{create_s3_deployment, on_premises_fleet, setup_on_premises_group};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// `mib` MiB of random files (4 MiB each) and an appspec, as a tgz.
fn make_bundle(dir: &Path, mib: usize) -> std::path::PathBuf {
    let src = dir.join("big");
    std::fs::create_dir_all(src.join("site")).unwrap();
    std::fs::write(src.join("appspec.yml"), "version: 0.0\nos: linux\n").unwrap();
    let mut buf = vec![0u8; 4 << 20];
    for i in 0..mib.div_ceil(4) {
        openssl::rand::rand_bytes(&mut buf).unwrap();
        std::fs::write(src.join(format!("site/blob{i:04}.bin")), &buf).unwrap();
    }
    let out = dir.join("big.tgz");
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar -C {} -cf - . | gzip -1 > {}",
            src.display(),
            out.display()
        ))
        .status()
        .unwrap()
        .success();
    assert!(ok, "cannot make the bundle");
    std::fs::remove_dir_all(&src).unwrap();
    out
}

/// Download alone and unpack alone, by the agent's code, in this process.
fn floors(agent_config: &Path, revision: &spec::RevisionSource, scratch: &Path) -> (f64, f64) {
    let (config, _) = Config::load(agent_config).expect("agent config");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let fetcher = rt.block_on(async {
        let sdk = aws::sdk_http_client(None).unwrap();
        let ident = aws::identity::resolve(&config, sdk.clone(), sdk.clone())
            .await
            .expect("identity");
        let ctx = aws::Context::new(&config, &ident.region, ident.credentials.clone(), sdk);
        let http = net::http::HttpClient::new(None, config.http_read_timeout).unwrap();
        revision::remote::RemoteFetcher::new(&config, &ctx, http, rt.handle().clone())
    });
    let bundle = scratch.join("bundle.tar");
    let t0 = Instant::now();
    fetcher.fetch(revision, &bundle, None).expect("download");
    let download = t0.elapsed().as_secs_f64();
    let staging = scratch.join("staging");
    let t0 = Instant::now();
    revision::unpack(
        spec::BundleType::Tgz,
        &bundle,
        &staging,
        false,
        config.revision_limits,
    )
    .expect("unpack");
    let unpack = t0.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).unwrap();
    let t0 = Instant::now();
    let ok = Command::new("tar")
        .arg("-xzf")
        .arg(&bundle)
        .arg("-C")
        .arg(&staging)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    println!(
        "  floors: download {download:.2} s, unpack {unpack:.2} s (GNU tar -xzf {:.2} s)",
        t0.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&staging);
    let _ = std::fs::remove_file(&bundle);
    (download, unpack)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mib: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1024);
    let runs: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(3);
    let bed = Testbed::new();
    let agents = on_premises_fleet(&bed, 1);
    setup_on_premises_group(&bed, "CodeDeployDefault.OneAtATime");
    let tgz = make_bundle(&bed.path("bench"), mib);
    let size = std::fs::metadata(&tgz).unwrap().len();
    let (version, etag) = bed.upload("bench-big", "big.tgz", &tgz);
    std::fs::remove_file(&tgz).unwrap();
    let revision = spec::RevisionSource::S3 {
        bucket: "bench-big".into(),
        key: "big.tgz".into(),
        version: Some(version),
        etag: Some(etag.clone()),
        bundle_type: spec::BundleType::Tgz,
    };
    println!(
        "a {:.0} MiB tgz from S3 (moto), {runs} runs",
        size as f64 / 1048576.0
    );
    let scratch = bed.path("scratch");
    let (mut ours, mut down, mut unp, mut ratios) = (vec![], vec![], vec![], vec![]);
    for run in 1..=runs {
        std::fs::create_dir_all(&scratch).unwrap();
        let (d, u) = floors(&agents[0].config, &revision, &scratch);
        let dep = create_s3_deployment(
            &bed,
            &format!("bucket=bench-big,key=big.tgz,bundleType=tgz,eTag={etag}"),
        );
        assert_eq!(
            bed.wait_deployment(&dep, Duration::from_secs(1800)),
            "Succeeded",
            "{}",
            agents[0].log_tail()
        );
        let c = bed
            .control
            .commands_of(&dep)
            .into_iter()
            .find(|c| c.event == "DownloadBundle")
            .unwrap();
        let t = c.completed.unwrap() - c.acked.unwrap();
        let ratio = t / d.max(u);
        println!(
            "  run {run}: DownloadBundle {t:.2} s = {ratio:.2}x the longer floor; download then unpack would be {:.2} s",
            d + u
        );
        ours.push(t);
        down.push(d);
        unp.push(u);
        ratios.push(ratio);
    }
    let (o, d, u) = (median(ours), median(down), median(unp));
    println!(
        "median: DownloadBundle {o:.2} s; download alone {d:.2} s, unpack alone {u:.2} s; \
         ratio to the longer {:.2}x (goal <= 1.2x; median of runs {:.2}x), to their sum {:.2}x",
        o / d.max(u),
        median(ratios),
        o / (d + u)
    );
}
