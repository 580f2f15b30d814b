#!/usr/bin/env python3
"""The VM side of a backup and a restore, before/after: two or more builds of bbr-agent back up
the bench's 512 MiB VM tree and restore that backup in turn, the order reversed every other
round, after one warm-up round; prints the medians. Wall by the clock; the whole command's CPU
(the driver and everything it started) from RUSAGE_CHILDREN; the VM side's (`serve` and its
scripts) from the `cpu.stat` of a cgroup of each build's own, as `benches/run.sh` counts
target 3.

    python3 benches/vm_ab.py ROUNDS NAME=/path/to/bbr-agent[|PREFIX] NAME=... ...

PREFIX, when given, goes before the agent in the inventory's command (e.g. `env
GLIBC_TUNABLES=glibc.malloc.arena_max=1`): the same build under another setting, on the VM side
only. Needs a full `benches/run.sh` first (its `vm-data` tree and `bin/in-cgroup`), its ext4
mounted at `$BENCH_DIR/mnt` (default target/bench), root, and cgroup v2 at
/sys/fs/cgroup/unified or /sys/fs/cgroup.
"""
import os, resource, shutil, statistics, subprocess, sys, time

bench = os.environ.get("BENCH_DIR") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "bench")
bench = os.path.abspath(bench)
rounds = int(sys.argv[1])
builds = [a.split("=", 1) for a in sys.argv[2:]]
if len(builds) < 2 or any(len(b) != 2 for b in builds):
    sys.exit("usage: vm_ab.py ROUNDS NAME=/path/to/bbr-agent[|PREFIX] NAME=...")
root = "/sys/fs/cgroup/unified" if os.path.exists("/sys/fs/cgroup/unified/cgroup.procs") else "/sys/fs/cgroup"
cg = os.path.join(root, f"bbr-vm-ab-{os.getpid()}")
art = os.path.join(bench, "mnt", "artifacts", "vm-ab")
vm = os.path.join(bench, "mnt", "vm-data")


def usage(name):
    with open(os.path.join(cg, name, "cpu.stat")) as f:
        return next(int(l.split()[1]) for l in f if l.startswith("usage_usec"))


def cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run(args):
    done = subprocess.run(args, capture_output=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(args)}: exit {done.returncode}\n{done.stderr.decode(errors='replace')[-4000:]}")


agents, invs = {}, {}
for name, spec in builds:
    path, _, prefix = spec.partition("|")
    agents[name] = path
    os.makedirs(os.path.join(cg, name))
    invs[name] = os.path.join(bench, f"inv-vm-ab-{name}.yml")
    with open(invs[name], "w") as f:
        f.write("deployment: acme\ninstances:\n- group: bench\n  index: 0\n"
                f"  command: '{bench}/bin/in-cgroup {cg}/{name} {prefix + ' ' if prefix else ''}{path} --root {vm} serve'\n")
res = {name: [] for name, _ in builds}
try:
    for r in range(rounds + 1):
        for name, _ in builds if r % 2 == 0 else builds[::-1]:
            shutil.rmtree(art, ignore_errors=True)
            os.makedirs(art)
            subprocess.run(["sync"], check=True)
            u, c, t = usage(name), cpu(), time.monotonic()
            run([agents[name], "deployment", "--inventory", invs[name], "backup", "--artifact-path", art])
            backup = (time.monotonic() - t, (usage(name) - u) / 1e6, cpu() - c)
            (made,) = os.listdir(art)
            subprocess.run(["sync"], check=True)
            u, c, t = usage(name), cpu(), time.monotonic()
            run([agents[name], "deployment", "--inventory", invs[name], "restore", "--artifact-path", os.path.join(art, made)])
            restore = (time.monotonic() - t, (usage(name) - u) / 1e6, cpu() - c)
            if r > 0:
                res[name].append(backup + restore)
finally:
    shutil.rmtree(art, ignore_errors=True)
    for name, _ in builds:
        os.rmdir(os.path.join(cg, name))
    os.rmdir(cg)
med = lambda v, i: statistics.median(x[i] for x in v)
for name, v in res.items():
    print(f"{name}: backup wall {med(v, 0):.3f} s, CPU {med(v, 2):.3f} s, VM side {med(v, 1):.3f} s; "
          f"restore wall {med(v, 3):.3f} s, CPU {med(v, 5):.3f} s, VM side {med(v, 4):.3f} s; {len(v)} rounds")
