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

Usage: tests/bench/local_install.py [--files N] [--runs R] [--agent PATH] [--keep]
The agent defaults to target/release/codedeploy-agent (build it first with
`cargo build --release -p codedeploy-agent`). The work directory is
$BENCH_DIR (default: the system temporary directory). Use a tmpfs such as
/dev/shm for repeatable figures: on a throttled cloud volume both the floor
and the agent vary several-fold from run to run.
"""

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))

# Peak RSS of one command, measured by a helper process that runs only it.
RSS_HELPER = (
    "import resource, subprocess, sys\n"
    "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    "sys.exit(r.returncode)\n"
)


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
                body = "".join(rnd.choice("abcdefghijklmnopqrstuvwxyz0123456789 \n(){};=") for _ in range(1024))
                with open(os.path.join(d, f"file{i:03d}.js"), "w") as f:
                    f.write(body)
                made += 1
        pkg += 1
    assert per_pkg == sum(c for _, c in layout)


def timed(cmd, shell=False):
    t0 = time.perf_counter()
    subprocess.run(cmd, shell=shell, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def timed_rss(cmd):
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", RSS_HELPER] + cmd, check=True, capture_output=True, text=True)
    return time.perf_counter() - t0, int(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=50_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--agent", default=os.path.join(ROOT, "target", "release", "codedeploy-agent"))
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    if not os.access(args.agent, os.X_OK):
        sys.exit(f"{args.agent} not found; run: cargo build --release -p codedeploy-agent")

    work = tempfile.mkdtemp(prefix="cd-bench-", dir=os.environ.get("BENCH_DIR"))
    try:
        src = os.path.join(work, "src")
        os.makedirs(src)
        dest = os.path.join(work, "dest")
        with open(os.path.join(src, "appspec.yml"), "w") as f:
            f.write(f"version: 0.0\nos: linux\nfiles:\n  - source: /\n    destination: {dest}\n")
        print(f"generating {args.files} files of 1 KiB ...", flush=True)
        generate(src, args.files)
        bundle = os.path.join(work, "bundle.tgz")
        subprocess.run(["tar", "czf", bundle, "-C", src, "."], check=True)
        print(f"bundle: {os.path.getsize(bundle) / 1e6:.1f} MB compressed", flush=True)
        conf = os.path.join(work, "agent.yml")
        with open(conf, "w") as f:
            f.write(f":root_dir: {work}/root\n:log_dir: {work}/log\n:max_revisions: 2\n")

        first, second, floor1, floor2, floor2full = [], [], [], [], []
        rss1, rss2 = [], []
        agent = [args.agent, "local", "-l", bundle, "-t", "tgz", "-c", conf, "-g", "bench"]
        def floor():
            fx, fd = os.path.join(work, "fx"), os.path.join(work, "fd")
            for p in (fx, fd):
                shutil.rmtree(p, ignore_errors=True)
            os.makedirs(fx)
            t_tar = timed(["tar", "xzf", bundle, "-C", fx])
            t_cp = timed(["cp", "-a", fx + "/.", fd])
            floor1.append(t_tar + t_cp)
            t_rm = timed(["rm", "-rf", fd])
            t_cp2 = timed(["cp", "-a", fx + "/.", fd])
            floor2.append(t_rm + t_cp2)
            floor2full.append(t_tar + t_rm + t_cp2)
            shutil.rmtree(fx)
            shutil.rmtree(fd)

        def ours():
            # A fresh host, then a second deployment over the first.
            shutil.rmtree(os.path.join(work, "root"), ignore_errors=True)
            shutil.rmtree(dest, ignore_errors=True)
            t, rss = timed_rss(agent)
            first.append(t)
            rss1.append(rss)
            t, rss = timed_rss(agent)
            second.append(t)
            rss2.append(rss)
            count = sum(len(fs) for _, _, fs in os.walk(dest))
            assert count == args.files + 1, f"installed {count} files"

        for r in range(args.runs):
            # Alternate who goes first: on volumes with burst credits or
            # writeback pressure, the second runner pays for the first.
            for step in ((floor, ours) if r % 2 == 0 else (ours, floor)):
                step()
            print(f"run {r + 1}: first {first[-1]:.2f}s (floor {floor1[-1]:.2f}s), second {second[-1]:.2f}s (floor {floor2[-1]:.2f}s)", flush=True)

        med = statistics.median
        print()
        print(f"{'':34}{'ours':>9}{'floor':>9}{'ratio':>8}{'peak RSS':>11}")
        print(f"{'first deploy (unpack + install)':34}{med(first):8.2f}s{med(floor1):8.2f}s{med(first) / med(floor1):7.2f}x{max(rss1) / 1024:9.1f} MB")
        print(f"{'second deploy vs rm -rf + cp -a':34}{med(second):8.2f}s{med(floor2):8.2f}s{med(second) / med(floor2):7.2f}x{max(rss2) / 1024:9.1f} MB")
        print(f"{'second deploy vs tar+rm+cp':34}{med(second):8.2f}s{med(floor2full):8.2f}s{med(second) / med(floor2full):7.2f}x")
        print(f"(median of {args.runs} runs; {os.cpu_count()} cores; floor = tar xzf / cp -a / rm -rf on the same filesystem)")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")


if __name__ == "__main__":
    main()
