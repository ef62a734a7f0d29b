#!/usr/bin/env python3
"""Benchmark: deploy a node_modules-shaped tree of 50,000 files of 1 KiB from
a tgz with `codedeploy-agent local`, then deploy it again (cleanup of the
previous revision + install), and print wall time and peak RSS next to the
floor measured in the same run on the same filesystem:

  first deployment   vs  tar xzf + cp -a
  second deployment  vs  rm -rf + cp -a          (what the issue names)
                     and tar xzf + rm -rf + cp -a (the same work ours does:
                                                   a second deployment also
                                                   unpacks its bundle)

With the official Rust agent 2.1 available (../shared/oracle/official-2.x/,
or $CODEDEPLOY_ORACLE_DIR/official-2.x/), it runs the same deployments
beside ours. `--big-mb M` adds a directory bundle holding one file of M MB
(floor: cp -a twice, into the deployment archive and to the destination).

Usage: tests/bench/local_install.py [--files N] [--runs R] [--agent PATH] [--big-mb M] [--keep]
The agent defaults to target/release/codedeploy-agent (build it first with
`cargo build --release -p codedeploy-agent`). The work directory is
$BENCH_DIR (default: the system temporary directory). Use a tmpfs such as
/dev/shm for repeatable figures: on a throttled cloud volume both the floor
and the agent vary several-fold from run to run.
"""

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))

# Peak RSS of one command, measured by a helper process that runs only it;
# the helper times the command too, so its own start-up (a Python
# interpreter's, tens of milliseconds) is not counted against the agent.
RSS_HELPER = (
    "import resource, subprocess, sys, time\n"
    "t0 = time.perf_counter()\n"
    "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
    "t = time.perf_counter() - t0\n"
    "print(t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    "sys.exit(r.returncode)\n"
)


ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789 \n(){};="


def generate(src, n_files):
    """node_modules shape: packages with nested lib/dist/src directories."""
    rnd = random.Random(42)
    per_pkg = 100
    layout = [("", 4), ("lib", 30), ("lib/internal", 20), ("dist", 26), ("src/utils", 20)]
    made = 0
    pkg = 0
    while made < n_files:
        base = os.path.join(src, "node_modules", f"pkg-{pkg:04d}")
        for sub, count in layout:
            d = os.path.join(base, sub)
            os.makedirs(d, exist_ok=True)
            for i in range(count):
                if made >= n_files:
                    break
                body = "".join(rnd.choices(ALPHABET, k=1024))
                with open(os.path.join(d, f"file{i:03d}.js"), "w") as f:
                    f.write(body)
                made += 1
        pkg += 1
    assert per_pkg == sum(c for _, c in layout)


def official_default():
    base = os.environ.get("CODEDEPLOY_ORACLE_DIR", os.path.join(ROOT, "..", "shared", "oracle"))
    p = os.path.join(base, "official-2.x", "codedeploy-local")
    return p if os.access(p, os.X_OK) else ""


def runner(work, name, binary, bundle, kind, dest_dir):
    """A fresh root for one agent; returns (command, reset)."""
    root = os.path.join(work, name)
    conf = os.path.join(work, f"{name}.yml")
    with open(conf, "w") as f:
        f.write(f":root_dir: {root}/root\n:log_dir: {root}/log\n:max_revisions: 2\n")
    cmd = [binary, "local", "-l", bundle, "-t", kind, "-c", conf, "-g", "bench"]
    if name == "official":
        # Its start-up writes /opt/codedeploy-agent/ whatever the
        # configuration says: give it a private, empty /opt.
        cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
               'mount -t tmpfs bench-opt /opt && exec "$0" "$@"',
               binary, "-c", conf, "-l", bundle, "-t", kind, "-g", "bench"]

    def reset():
        rmtree(root)
        rmtree(dest_dir)
    return cmd, reset


def rmtree(path):
    """Untimed clean-up between steps, at rm's speed (Python's rmtree takes
    minutes over a million files)."""
    subprocess.run(["rm", "-rf", "--", path], check=False)


def timed(cmd, shell=False):
    t0 = time.perf_counter()
    subprocess.run(cmd, shell=shell, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def timed_rss(cmd):
    out = subprocess.run([sys.executable, "-c", RSS_HELPER] + cmd, check=True, capture_output=True, text=True)
    t, rss = out.stdout.strip().splitlines()[-1].split()
    return float(t), int(rss)


def floor_tgz(work, bundle, out):
    """tar xzf + cp -a (first); rm -rf + cp -a, and with the tar (second)."""
    fx, fd = os.path.join(work, "fx"), os.path.join(work, "fd")
    for p in (fx, fd):
        rmtree(p)
    os.makedirs(fx)
    t_tar = timed(["tar", "xzf", bundle, "-C", fx])
    t_cp = timed(["cp", "-a", fx + "/.", fd])
    t_rm = timed(["rm", "-rf", fd])
    t_cp2 = timed(["cp", "-a", fx + "/.", fd])
    out["first"].append(t_tar + t_cp)
    out["second"].append(t_tar + t_rm + t_cp2)
    out["rm+cp"].append(t_rm + t_cp2)
    rmtree(fx)
    rmtree(fd)


def floor_dir(work, src, out):
    """cp -a into the deployment archive, cp -a to the destination."""
    fx, fd = os.path.join(work, "fx"), os.path.join(work, "fd")
    for p in (fx, fd):
        rmtree(p)
    t = timed(["cp", "-a", src, fx]) + timed(["cp", "-a", fx + "/.", fd])
    out["first"].append(t)
    rmtree(fx)
    rmtree(fd)


def deploy_twice(cmd, reset, out, dest, expect):
    reset()
    for key in ("first", "second"):
        t, rss = timed_rss(cmd)
        out[key].append(t)
        out[key + " rss"].append(rss)
    count = sum(len(fs) for _, _, fs in os.walk(dest))
    assert count == expect, f"{cmd[0]} installed {count} files, not {expect}"
    # Leave the filesystem to the next runner (a million-file tree on a
    # tmpfs is gigabytes per copy).
    reset()


def case(name, work, runs, floor, agents, dest, expect):
    """Run the floor and every agent `runs` times, alternating who goes first
    (on volumes with burst credits the second runner pays for the first)."""
    res = {n: {k: [] for k in ("first", "second", "rm+cp", "first rss", "second rss")} for n in ["floor"] + list(agents)}
    steps = [("floor", lambda: floor(res["floor"]))] + [
        (n, (lambda c=c, r=r, n=n: deploy_twice(c, r, res[n], dest, expect))) for n, (c, r) in agents.items()]
    for i in range(runs):
        for n, step in (steps if i % 2 == 0 else steps[::-1]):
            step()
        print(f"  run {i + 1}: " + ", ".join(f"{n} {res[n]['first'][-1]:.2f}s" for n, _ in steps), flush=True)
    med = statistics.median
    fl = res["floor"]
    print(f"\n{name}")
    # Best of the runs beside the median: on a virtual machine the first
    # touch of fresh memory now and then costs whoever allocates it (the
    # agent or the floor) several tenths of a second, and noise only adds.
    print(f"{'':12}{'':14}{'time':>9}{'floor':>9}{'ratio':>8}{'best':>8}{'peak RSS':>11}")
    for key, label in (("first", "first deploy"), ("second", "redeploy")):
        if not fl[key]:
            continue
        for n in agents:
            t = med(res[n][key])
            best = min(res[n][key]) / min(fl[key])
            print(f"{n:12}{label:14}{t:8.2f}s{med(fl[key]):8.2f}s{t / med(fl[key]):7.2f}x{best:7.2f}x{max(res[n][key + ' rss']) / 1024:9.1f} MB")
    if fl["rm+cp"]:
        print(f"{'':12}(redeploy floor = tar xzf + rm -rf + cp -a; rm -rf + cp -a alone: {med(fl['rm+cp']):.2f}s)")
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=50_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--agent", default=os.path.join(ROOT, "target", "release", "codedeploy-agent"))
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--big-mb", type=int, default=0)
    ap.add_argument("--official", default=official_default())
    args = ap.parse_args()
    if not os.access(args.agent, os.X_OK):
        sys.exit(f"{args.agent} not found; run: cargo build --release -p codedeploy-agent")

    work = tempfile.mkdtemp(prefix="cd-bench-", dir=os.environ.get("BENCH_DIR"))
    try:
        dest = os.path.join(work, "dest")
        appspec = f"version: 0.0\nos: linux\nfiles:\n  - source: /\n    destination: {dest}\n"
        binaries = {"ours": args.agent}
        if args.official:
            binaries["official"] = args.official
        else:
            print("official 2.1 not found; only ours runs")
        print(f"{os.cpu_count()} cores; median of {args.runs} runs (best: fastest run over fastest floor); floors measured in the same runs on the same filesystem")
        if args.files:
            src = os.path.join(work, "src")
            os.makedirs(src)
            with open(os.path.join(src, "appspec.yml"), "w") as f:
                f.write(appspec)
            print(f"generating {args.files} files of 1 KiB ...", flush=True)
            generate(src, args.files)
            bundle = os.path.join(work, "bundle.tgz")
            subprocess.run(["tar", "czf", bundle, "-C", src, "."], check=True)
            rmtree(src)
            print(f"bundle: {os.path.getsize(bundle) / 1e6:.1f} MB compressed", flush=True)
            agents = {n: runner(work, n, b, bundle, "tgz", dest) for n, b in binaries.items()}
            case(f"{args.files} files of 1 KiB, tgz", work, args.runs,
                 lambda out: floor_tgz(work, bundle, out), agents, dest, args.files + 1)
        if args.big_mb:
            src = os.path.join(work, "bigsrc")
            os.makedirs(src)
            with open(os.path.join(src, "appspec.yml"), "w") as f:
                f.write(appspec)
            with open(os.path.join(src, "big.bin"), "wb") as f:
                block = os.urandom(1 << 20)
                for _ in range(args.big_mb):
                    f.write(block)
            agents = {n: runner(work, n, b, src, "directory", dest) for n, b in binaries.items()}
            case(f"one file of {args.big_mb} MB, directory bundle", work, args.runs,
                 lambda out: floor_dir(work, src, out), agents, dest, 2)
    finally:
        if not args.keep:
            rmtree(work)
        else:
            print(f"kept {work}")


if __name__ == "__main__":
    main()
