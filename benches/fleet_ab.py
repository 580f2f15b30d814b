#!/usr/bin/env python3
"""Fleet before/after, closer than `benches/run.sh`'s three runs: two or more builds of
bbr-agent back up the bench's fleet of N VMs in turn, the order reversed every other round,
after one warm-up round; prints each round and the medians. Wall by the clock, CPU from
RUSAGE_CHILDREN (the driver, its serves and their scripts).

    python3 benches/fleet_ab.py N ROUNDS NAME=/path/to/bbr-agent[|PREFIX] NAME=/path ...

PREFIX, when given, goes before the agent in every instance's command (e.g. `env
GLIBC_TUNABLES=glibc.malloc.arena_max=1`): the same build under another setting, on the VMs only.

Needs a full `benches/run.sh` first (its fleet trees and `inv-fleet-N.yml`, with N among its
FLEET_SIZES) and its ext4 mounted at `$BENCH_DIR/mnt` (default target/bench): a fleet
measured on another filesystem measures that filesystem (docs/benchmarks.md, "Fleet, stop 20").
"""
import os, re, resource, shutil, statistics, subprocess, sys, time

bench = os.environ.get("BENCH_DIR") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "bench")
n, rounds = int(sys.argv[1]), int(sys.argv[2])
builds = [a.split("=", 1) for a in sys.argv[3:]]
if len(builds) < 2 or any(len(b) != 2 for b in builds):
    sys.exit("usage: fleet_ab.py N ROUNDS NAME=/path/to/bbr-agent[|PREFIX] NAME=/path ...")
inventory = open(os.path.join(bench, f"inv-fleet-{n}.yml")).read()
invs = {}
prefixes = {}
for i, (name, spec) in enumerate(builds):
    path, _, prefix = spec.partition("|")
    builds[i], prefixes[name] = [name, path], prefix + " " if prefix else ""
    invs[name] = os.path.join(bench, f"inv-ab-{name}-{n}.yml")
    with open(invs[name], "w") as f:
        # Every instance's command starts with the bench's agent: this build's instead.
        f.write(re.sub(r"command: '\S+ ", lambda _: f"command: '{prefixes[name]}{path} ", inventory))
art = os.path.join(bench, "mnt", "artifacts", "fleet-ab")
res = {name: [] for name, _ in builds}
for r in range(rounds + 1):
    for name, path in builds if r % 2 == 0 else builds[::-1]:
        shutil.rmtree(art, ignore_errors=True)
        os.makedirs(art)
        subprocess.run(["sync"], check=True)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.monotonic()
        run = subprocess.run([path, "deployment", "--inventory", invs[name], "--max-in-flight", "50",
                              "backup", "--artifact-path", art], capture_output=True)
        wall = time.monotonic() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if run.returncode != 0:
            sys.exit(f"{name}: exit {run.returncode}\n{run.stderr.decode(errors='replace')[-4000:]}")
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        if r > 0:
            res[name].append((wall, cpu))
    if r > 0:
        print(f"round {r}: " + "  ".join(f"{k} {v[-1][0]:.3f} s" for k, v in res.items()), flush=True)
shutil.rmtree(art, ignore_errors=True)
for name, v in res.items():
    walls = [w for w, _ in v]
    print(f"{n} VMs {name}: wall median {statistics.median(walls):.3f} s ({min(walls):.3f} .. "
          f"{max(walls):.3f}), CPU median {statistics.median(c for _, c in v):.3f} s, {len(v)} rounds")
