#!/usr/bin/env bash
# The bbr-agent benchmark (issue 5): bbr-agent and the shell sequences it replaces, side by side
# in one run, on the same data, on this machine. See docs/benchmarks.md for the method and the
# last recorded figures.
#
#   benches/run.sh              full run: 512 MiB artifact, 4 GiB memory check, 10/100/300 VMs
#   QUICK=1 benches/run.sh      quick run: 64 MiB artifact, 10/20 VMs, no 4 GiB check (< 1 min)
#
# Knobs (environment): RUNS (measured runs of each contender, after one warm-up run; default 5,
# 3 when QUICK=1), BENCH_DIR (work dir, default target/bench; the data sets are built once there
# and reused), BENCH_FS (loop: the files live on a dedicated ext4 with a journal in a sparse
# image BENCH_DIR/fs.img, loop-mounted with direct I/O, as root; dir: in BENCH_DIR/files on
# whatever filesystem that is; default: loop when it can be mounted, else dir), SKIP_BUILD=1
# (use the binary as built), SKIP_4G=1, PROFILE=1 (also record a `perf record -e cpu-clock`
# profile of one drain and one restore into BENCH_DIR/profile), FLEET_SIZES (e.g. "10 100 300
# 1000"), BEFORE_AGENT=PATH (another build of bbr-agent, e.g. the last commit's: the fleet runs
# it too, alternating with this one, first every other round, as "before"), SKIP_BBR=1 (no
# bbrlocal), BBR_REFERENCE (where BBR's own code is, default ../shared/bbr-reference).
#
# BBR's own code: `bbrlocal` from $BBR_REFERENCE (its build.sh builds it with Debian's Go,
# installing what it lacks, and caches it under ~/.cache/bbr-reference) backs up and restores
# the same VM tree through BBR's orchestrator and its real SSH client (`--transport ssh`), in
# the same alternation as bbr-agent. It needs root (a mount namespace per VM).
#
# CPU on the VM (issue 17, target 3), as root with a cgroup v2 mount: what runs on the VM side
# runs in a cgroup of its own (BENCH_CG, default bbr-bench-<pid> under this shell's cgroup), and
# its cpu.stat usage_usec is read around each run: the agent's `serve` and its scripts, the
# backup script alone, and bbrlocal's VM commands by kind (a `nsenter` first on bbrlocal's PATH
# sorts them: `tar`, `shasum`, the job scripts, the rest). Over real SSH (target 4): the bench
# starts its own sshd on 127.0.0.1 (Debian's openssh-server, installed when missing), in a
# cgroup of its own too, and backs up through `ssh` with OpenSSH's default cipher and with
# `-c aes128-gcm@openssh.com`. SKIP_SSH=1 leaves that out.
#
# It prints a table of medians and ratios and writes it to BENCH_DIR/results.md; every raw
# timing is in BENCH_DIR/results.tsv (name, run, wall ns, CPU ns; run 0 is the warm-up).
set -euo pipefail
umask 022
cd "$(dirname "$0")/.."
REPO=$PWD
export LC_ALL=C

QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
  RUNS=${RUNS:-3}
  SCALE=8          # the data set is 512 MiB / 8 = 64 MiB
  FLEET_SIZES=${FLEET_SIZES:-"10 20"}
  SKIP_4G=1
else
  RUNS=${RUNS:-5}
  SCALE=1
  FLEET_SIZES=${FLEET_SIZES:-"10 100 300"}
  SKIP_4G=${SKIP_4G:-0}
fi
WORK=${BENCH_DIR:-$REPO/target/bench}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
RESULTS=$WORK/results.tsv
SUMMARY=$WORK/results.md
FACTS=$WORK/facts.txt
LOGS=$WORK/logs
MAX_IN_FLIGHT=50
START_JOBS=200
STARTUP_RUNS=50

say() { printf '== %s\n' "$*" >&2; }
now() { date +%s%N; }

# ---------------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------------
need_apt=()
[ -x /usr/bin/time ] || need_apt+=(time)
command -v hyperfine >/dev/null || need_apt+=(hyperfine)
# The real sshd of target 4: the packages scripts/test-deps installs for the tests' sshd.
if [ "${SKIP_SSH:-0}" != 1 ]; then
  [ -x /usr/sbin/sshd ] || need_apt+=(openssh-server)
  command -v ssh >/dev/null && command -v ssh-keygen >/dev/null || need_apt+=(openssh-client)
fi
if [ "${#need_apt[@]}" -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  say "installing ${need_apt[*]} from Debian"
  (apt-get install -y -qq "${need_apt[@]}" >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq "${need_apt[@]}" >/dev/null 2>&1; }) ||
    say "could not install ${need_apt[*]}; carrying on without"
fi
for tool in tar shasum openssl python3 tee find xargs cp; do
  command -v "$tool" >/dev/null || { echo "benches/run.sh: $tool is required" >&2; exit 2; }
done
[ -x /usr/bin/time ] || { echo "benches/run.sh: /usr/bin/time (Debian package 'time') is required" >&2; exit 2; }

# The release binary: where cargo says it put it (a [build] target in .cargo/config.toml moves
# it to target/<triple>/release).
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  say "cargo build --release"
  AGENT=$(cargo build --release --locked --message-format=json-render-diagnostics |
    python3 -c 'import json, sys
for m in map(json.loads, sys.stdin):
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "bbr-agent":
        print(m["executable"])' | tail -1)
else
  AGENT=$(ls -t "$REPO"/target/release/bbr-agent "$REPO"/target/*-*-*/release/bbr-agent 2>/dev/null | head -1 || true)
fi
[ -n "${AGENT:-}" ] && [ -x "$AGENT" ] || { echo "benches/run.sh: no release binary of bbr-agent found" >&2; exit 2; }
BEFORE_AGENT=${BEFORE_AGENT:-}
[ -z "$BEFORE_AGENT" ] || [ -x "$BEFORE_AGENT" ] || { echo "benches/run.sh: BEFORE_AGENT=$BEFORE_AGENT is not an executable" >&2; exit 2; }

# BBR's own code, built once by its build script (the last line of its output is the binary).
BBRLOCAL=
BBR_REFERENCE=${BBR_REFERENCE:-$REPO/../shared/bbr-reference}
if [ "${SKIP_BBR:-0}" != 1 ]; then
  if [ "$(id -u)" = 0 ] && [ -x "$BBR_REFERENCE/build.sh" ]; then
    say "building bbrlocal (BBR's own code) with $BBR_REFERENCE/build.sh"
    BBRLOCAL=$("$BBR_REFERENCE/build.sh" | tail -n 1) || BBRLOCAL=
    [ -n "$BBRLOCAL" ] && [ -x "$BBRLOCAL" ] || { say "bbrlocal could not be built; carrying on without it"; BBRLOCAL=; }
  else
    say "no bbrlocal: it needs root and $BBR_REFERENCE/build.sh"
  fi
fi

# ---------------------------------------------------------------------------------------------
# Where the files live
# ---------------------------------------------------------------------------------------------
# A shared host's root filesystem makes file timings depend on what else runs there, and an
# ext4 without a journal (as some sandboxes have) makes creating files after deleting many
# others quadratic (ext4's recently_deleted() scan of the inode bitmap). So by default the
# files live on a filesystem of their own: ext4 with a journal, as BOSH formats a persistent
# disk, in a sparse image reused from run to run.
IMG=$WORK/fs.img
MNT=$WORK/mnt
LOOPDEV=
FS_MODE=${BENCH_FS:-auto}
release_fs() {
  if [ -n "$LOOPDEV" ]; then
    cd /
    fstrim "$MNT" 2>/dev/null || true   # give the image's freed blocks back to the host
    umount "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null || true
    losetup -d "$LOOPDEV" 2>/dev/null || true
    LOOPDEV=
  fi
}
# Everything the run started or made outside BENCH_DIR goes at exit, whatever the exit: its
# sshd (by its pid), its cgroups (once empty), its loop mount.
SSHD_PID=
CG=
cleanup() {
  if [ -n "$SSHD_PID" ]; then
    kill "$SSHD_PID" 2>/dev/null || true
    wait "$SSHD_PID" 2>/dev/null || true
    SSHD_PID=
  fi
  if [ -n "$CG" ] && [ -d "$CG" ]; then
    local i
    for ((i = 0; i < 50; i++)); do
      find "$CG" -depth -mindepth 1 -type d -exec rmdir {} + 2>/dev/null || true
      rmdir "$CG" 2>/dev/null && break
      sleep 0.1
    done
    CG=
  fi
  release_fs
}
trap cleanup EXIT
mount_fs() {
  [ "$(id -u)" = 0 ] && command -v losetup >/dev/null && command -v mkfs.ext4 >/dev/null || return 1
  # Leftovers of an interrupted run.
  mountpoint -q "$MNT" 2>/dev/null && umount "$MNT"
  for dev in $(losetup -j "$IMG" 2>/dev/null | cut -d: -f1); do losetup -d "$dev" || true; done
  if [ ! -f "$IMG" ]; then
    truncate -s "${BENCH_FS_SIZE:-24G}" "$IMG"
    mkfs.ext4 -q -F -L bbr-bench "$IMG" || { rm -f "$IMG"; return 1; }
  fi
  LOOPDEV=$(losetup --direct-io=on --show -f "$IMG" 2>/dev/null || losetup --show -f "$IMG") || return 1
  mkdir -p "$MNT"
  mount "$LOOPDEV" "$MNT" || { losetup -d "$LOOPDEV"; LOOPDEV=; return 1; }
}
case "$FS_MODE" in
  loop) mount_fs || { echo "benches/run.sh: cannot loop-mount $IMG (BENCH_FS=loop needs root and loop devices)" >&2; exit 2; }
        F=$MNT ;;
  dir) F=$WORK/files ;;
  *) if mount_fs; then F=$MNT; FS_MODE=loop; else F=$WORK/files; FS_MODE=dir; fi ;;
esac
mkdir -p "$F"
ART=$F/artifacts

rm -rf "$LOGS" "$ART"
mkdir -p "$LOGS" "$ART" "$WORK/bin"
: > "$RESULTS"

# What else the machine is doing: load average and CPU pressure (the share of time some task
# waited for a CPU), noted at the start of each part.
pressure() {
  local psi=""
  [ -r /proc/pressure/cpu ] && psi=", CPU pressure avg10 $(awk '/^some/ { sub("avg10=", "", $2); print $2 "%" }' /proc/pressure/cpu)"
  echo "$1: load average $(cut -d' ' -f1-3 /proc/loadavg)$psi" >> "$FACTS"
}

# Records one timing: name, run number, wall nanoseconds, CPU nanoseconds (user + system of
# everything the command started and waited for; empty when not measured).
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${4:-}" >> "$RESULTS"; }

# Sets CPU_NS to the CPU time (user + system) of this shell's finished children, in
# nanoseconds. Not a $(...) function: `times` must run in this shell (a subshell counts from
# zero), so its output goes through a file.
children_cpu() {
  times > "$WORK/.times"
  CPU_NS=$(tail -1 "$WORK/.times" | awk '{ t = 0; for (i = 1; i <= 2; i++) { split($i, a, "m"); sub("s", "", a[2]); t += a[1] * 60 + a[2] } printf "%.0f\n", t * 1e9 }')
}

# Runs "$@" and records its wall and CPU time under $1 for run $RUN; output goes to
# $LOGS/<name>.<run>.
timed() {
  local name=$1; shift
  local log=$LOGS/$name.$RUN s e c0 c1
  children_cpu
  c0=$CPU_NS
  s=$(now)
  if ! "$@" > "$log" 2>&1; then
    echo "benches/run.sh: '$name' failed (run $RUN); its output:" >&2
    cat "$log" >&2
    exit 1
  fi
  e=$(now)
  children_cpu
  c1=$CPU_NS
  record "$name" "$RUN" $((e - s)) $((c1 - c0))
}

# The duration at the end of bbr-agent's own drain or copy line, in nanoseconds. $1 is an ERE
# with one group for the line's keyword: the line reads "bench/0 bench: backup copied from the VM: 2081 files,
# 512.1 MiB in 1.4s" (older builds: "bench/0 bench drain: ..."); durations are
# 812ms, 1.4s or 1m02s.
line_ns() {
  local pattern=$1 log=$2
  sed -En "s/.*${pattern} .* in ([0-9.]+m?s|[0-9]+m[0-9]+s)\$/\2/p" "$log" | tail -1 | awk '
    /^[0-9]+ms$/   { sub("ms", ""); printf "%.0f\n", $0 * 1e6; next }
    /^[0-9.]+s$/   { sub("s", "");  printf "%.0f\n", $0 * 1e9; next }
    /^[0-9]+m[0-9]+s$/ { split($0, p, "m"); sub("s", "", p[2]); printf "%.0f\n", (p[1] * 60 + p[2]) * 1e9 }'
}

# Writes every file's pages out, so the next contender does not pay for this one's writeback.
settle() { sync; }

# quiet: after a part that loads the machine (the fleets), waits up to 30 s for the CPU
# pressure (PSI some avg10) to fall under 5%, so the next part is not timed in its wake.
quiet() {
  [ -r /proc/pressure/cpu ] || return 0
  local i
  for ((i = 0; i < 60; i++)); do
    awk '/^some/ { sub("avg10=", "", $2); exit !($2 + 0 < 5) }' /proc/pressure/cpu && return 0
    sleep 0.5
  done
}

# ---------------------------------------------------------------------------------------------
# CPU on the VM (issue 17, target 3): cgroup v2 counters
# ---------------------------------------------------------------------------------------------
# What runs on the VM side is put in a cgroup v2 of its own under CG, and the cgroup's
# cpu.stat usage_usec read before and after each run: the scheduler's runtime, to the
# microsecond, of every task while it was in the cgroup or in one below it (a child cgroup's
# time stays counted in its parents after it is removed, as the agent's per-script cgroups
# are). No process is missed for not being waited for, and nothing else is counted: the
# driver, bbrlocal and this shell stay where they are. The groups:
#   agent, agent-empty  `serve` (and the scripts it starts) of the data VM, of the empty VM
#   script              the backup (or restore) script alone, run as the agent runs it
#   sshd                the bench's sshd (target 4): its sessions, `serve` and the scripts
#   bbr-tar, bbr-shasum, bbr-scripts, bbr-other
#                       bbrlocal's VM commands by kind (see bin/bbr-vm/nsenter below)
CG_GROUPS="agent agent-empty script sshd bbr-tar bbr-shasum bbr-scripts bbr-other"
cg_setup() {
  [ "$(id -u)" = 0 ] || return 1
  local mnt root own g
  # The cgroup2 mount (mountinfo: the field after " - " is the type; 4 and 5 are root and
  # mount point), and this shell's place in it (/proc/self/cgroup's "0::PATH").
  read -r root mnt < <(awk '{ for (i = 7; i < NF; i++) if ($i == "-") { if ($(i + 1) == "cgroup2") { print $4, $5; exit } break } }' /proc/self/mountinfo) || return 1
  [ -n "$mnt" ] || return 1
  own=$(sed -n 's/^0:://p' /proc/self/cgroup)
  [ -n "$own" ] || return 1
  [ "$root" = / ] || own=${own#"$root"}
  own=${own%/}
  CG=${BENCH_CG:-$mnt$own/bbr-bench-$$}
  mkdir "$CG" 2>/dev/null || { CG=; return 1; }
  for g in $CG_GROUPS; do mkdir "$CG/$g" || return 1; done
  grep -q '^usage_usec ' "$CG/agent/cpu.stat" 2>/dev/null || return 1
}
# The CPU a group has spent so far, in microseconds.
cg_usage() { awk '$1 == "usage_usec" { print $2 }' "$CG/$1/cpu.stat"; }
# cg_mark GROUP...: the groups' counters now; cg_since PREFIX: records, for each marked group
# G, "PREFIX_G" for run $RUN with the CPU it spent since (in the CPU column; wall 0), once
# every process of its sessions has gone (the sshd group keeps its listener: 1).
CG_MARK=()
cg_mark() {
  CG_MARK=()
  [ -n "$CG" ] || return 0
  local g
  for g in "$@"; do CG_MARK+=("$g=$(cg_usage "$g")"); done
}
cg_procs() { find "$CG/$1" -name cgroup.procs -exec cat {} + | wc -l; }
cg_since() {
  local prefix=$1 m g u0 keep i
  for m in "${CG_MARK[@]}"; do
    g=${m%%=*} u0=${m#*=} keep=0
    [ "$g" = sshd ] && keep=1
    for ((i = 0; i < 200 && $(cg_procs "$g") > keep; i++)); do sleep 0.01; done
    record "${prefix}_$g" "$RUN" 0 $((($(cg_usage "$g") - u0) * 1000))
  done
  CG_MARK=()
}
if cg_setup; then
  # in-cgroup DIR COMMAND...: COMMAND in the cgroup DIR (this process moves itself there, then
  # becomes COMMAND: only the exec is counted beyond it).
  cat > "$WORK/bin/in-cgroup" <<'SH'
#!/bin/sh
dir=$1
shift
echo $$ > "$dir/cgroup.procs" || exit 125
exec "$@"
SH
  chmod 755 "$WORK/bin/in-cgroup"
  # bbrlocal runs each VM command as `nsenter --mount=NS --wd=HOME -- /bin/bash -c CMDLINE`
  # (its vm.go), found on its PATH: this one, first there, puts itself in the group for
  # CMDLINE's kind, then is the real nsenter. BBR's commands (its ssh/remote_runner.go):
  # `sudo tar -C DIR -c .` and `sudo sh -c 'tar -C DIR -x'`; `sudo sh -c 'cd DIR && find . -type
  # f | xargs shasum -a 256'`; the job scripts, `sudo VARS /var/vcap/jobs/J/bin/bbr/S`; the
  # rest (`echo %OS%`, the scripts' `find`, `stat`, `mkdir -p`, `du`, `rm -rf`).
  mkdir -p "$WORK/bin/bbr-vm"
  cat > "$WORK/bin/bbr-vm/nsenter" <<SH
#!/bin/sh
for cmdline; do :; done
case \$cmdline in
  *"tar -C "*) kind=tar ;;
  *shasum*) kind=shasum ;;
  *"find /var/vcap/jobs/"*) kind=other ;;
  */bin/bbr/*) kind=scripts ;;
  *) kind=other ;;
esac
echo \$\$ > "$CG/bbr-\$kind/cgroup.procs" || exit 125
exec $(command -v nsenter) "\$@"
SH
  chmod 755 "$WORK/bin/bbr-vm/nsenter"
else
  # Whatever cg_setup made before it failed goes (rmdir of the interface files fails: harmless).
  [ -z "$CG" ] || rmdir "$CG"/* "$CG" 2>/dev/null || true
  CG=
  say "no cgroup v2 to count the VM side's CPU in (it needs root and a writable cgroup2 mount): target 3 not measured"
fi
# in_cg GROUP: the words that run a command in GROUP ("" without cgroups).
in_cg() { [ -z "$CG" ] || printf '%s %s' "$WORK/bin/in-cgroup" "$CG/$1"; }

# ---------------------------------------------------------------------------------------------
# Helpers written once: the operator side of BBR's sequence, the data generator, the summary
# ---------------------------------------------------------------------------------------------

# BBR's operator side: read the downloaded tar back and SHA-256 every regular entry (BBR does
# this in Go with archive/tar + crypto/sha256; here Python's tarfile + hashlib, which is
# OpenSSL's SHA-256, in 1 MiB reads).
cat > "$WORK/bin/tar_sha256.py" <<'PY'
import hashlib, sys, tarfile
with open(sys.argv[1], "rb") as f, tarfile.open(fileobj=f, mode="r|") as tar:
    for member in tar:
        if member.isfile():
            h = hashlib.sha256()
            src = tar.extractfile(member)
            while True:
                block = src.read(1 << 20)
                if not block:
                    break
                h.update(block)
            print(f"{h.hexdigest()}  {member.name}")
PY

# The data set: one big file, 32 of 4 MiB, 2,048 of 64 KiB (in 32 directories), random bytes;
# every count and size divided by SCALE except the 4 MiB and 64 KiB sizes.
cat > "$WORK/bin/make_data.py" <<'PY'
import os, sys
root, scale = sys.argv[1], int(sys.argv[2])
MiB = 1 << 20
def write(path, size):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 16 * MiB)
            f.write(os.urandom(n))
            left -= n
write(os.path.join(root, "big.bin"), 256 * MiB // scale)
for i in range(32 // scale):
    write(os.path.join(root, "mid", f"m{i:02}.bin"), 4 * MiB)
for d in range(32 // scale):
    for i in range(64):
        write(os.path.join(root, "small", f"{d:02}", f"f{i:02}.bin"), 64 << 10)
PY

# Compares the checksums bbr-agent recorded with those of shasum (VM side) and of the operator
# side of BBR's sequence.
cat > "$WORK/bin/same_sums.py" <<'PY'
import re, sys
metadata, *sums = sys.argv[1:]
agent = dict(re.findall(r"^\s+(\./\S+): ([0-9a-f]{64})$", open(metadata).read(), re.M))
for path in sums:
    other = {}
    for line in open(path):
        digest, name = line.rstrip("\n").split("  ", 1)
        other[name if name.startswith("./") else "./" + name] = digest
    if other != agent:
        sys.exit(f"checksums differ between {metadata} and {path}")
print(f"{len(agent)} files: bbr-agent, shasum and the operator-side re-read agree")
PY

# ---------------------------------------------------------------------------------------------
# The machine
# ---------------------------------------------------------------------------------------------
{
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "commit: $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$REPO" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || echo ' (src differs from it)')"
  echo "mode: $([ "$QUICK" = 1 ] && echo quick || echo full), $RUNS measured runs after 1 warm-up"
  echo "nproc: $(nproc)"
  echo "cpu: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
  echo "memory: $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
  echo "kernel: $(uname -r)"
  if [ "$FS_MODE" = loop ]; then
    echo "files: $F, ext4 with a journal on $LOOPDEV ($(cat "/sys/block/$(basename "$LOOPDEV")/loop/dio" 2>/dev/null | sed 's/1/direct I\/O/; s/0/buffered/') over $IMG); host: $(df -T "$WORK" | awk 'NR == 2 { print $2 ", " int($5 / 1048576) " GiB free" }')"
  else
    echo "files: $F, $(df -T "$F" | awk 'NR == 2 { print $2 ", " int($5 / 1048576) " GiB free" }')$( [ "$(cat /sys/fs/ext4/"$(basename "$(df --output=source "$F" | tail -1)")"/journal_task 2>/dev/null)" = "<none>" ] && echo ', ext4 WITHOUT a journal')"
  fi
  echo "sha_ni in /proc/cpuinfo: $(grep -o -m1 'sha_ni' /proc/cpuinfo || echo no)"
  # The sha2 the agent itself depends on (a dependency may bring another version beside it).
  sha2_spec="sha2@$(cargo tree -q -e normal --depth 1 2>/dev/null | sed -n 's/.*sha2 v\([0-9.]*\).*/\1/p' | head -1)"
  echo "sha2 crate: $(cargo tree -q -e features -i "$sha2_spec" 2>/dev/null | head -1 || echo '?'); features: $(cargo tree -q -e features -i "$sha2_spec" 2>/dev/null | sed -n 's/.*sha2 feature "\([^"]*\)".*/\1/p' | sort -u | paste -sd, -)"
  echo "SHA-NI instructions (sha256rnds2) in the binary: $(objdump -d "$AGENT" 2>/dev/null | grep -c sha256rnds2 || true)"
  # BLAKE3 checks the bytes on their way to and from a VM (docs/protocol.md, `digest`).
  echo "blake3 crate: $(cargo tree -q -e normal --depth 1 2>/dev/null | sed -n 's/.*\(blake3 v[0-9.]*\).*/\1/p' | head -1); avx512 in /proc/cpuinfo: $(grep -o -m1 'avx512f' /proc/cpuinfo || echo no)"
  echo "BBR's own code: ${BBRLOCAL:-not run}$( [ -n "$BBRLOCAL" ] && [ -f "$(dirname "$BBRLOCAL")/bbr-src.commit" ] && echo " (BBR at $(cut -c1-12 "$(dirname "$BBRLOCAL")/bbr-src.commit"), $(go version 2>/dev/null | cut -d' ' -f3))")"
  [ -z "$BEFORE_AGENT" ] || echo "fleet before/after: before = $BEFORE_AGENT"
  echo "tools: $(tar --version | head -1); $(openssl version); Python $(python3 -c 'import sys; print(sys.version.split()[0])'); shasum $(shasum --version)"
} > "$FACTS"

say "hardware ceiling: openssl speed -evp sha256, 16 KiB blocks, one core"
sha_line=$(taskset -c 0 openssl speed -evp sha256 -bytes 16384 -seconds 3 2>/dev/null | grep -i '^sha256' | tail -1 || true)
sha_kbs=$(awk '{ v = $NF; sub("k", "", v); print v }' <<< "$sha_line")
echo "openssl speed -evp sha256 (16 KiB blocks, 1 core): ${sha_kbs:-?} kB/s = $(awk -v k="${sha_kbs:-0}" 'BEGIN { printf "%.0f MB/s", k / 1000 }')" >> "$FACTS"
cat "$FACTS" >&2

# ---------------------------------------------------------------------------------------------
# Fixtures: the data set, the VMs, the inventories
# ---------------------------------------------------------------------------------------------
SIZE_LABEL=$((512 / SCALE))M
DATA=$F/data-$SIZE_LABEL
EMPTY=$F/data-empty
if [ ! -f "$DATA.done" ]; then
  say "building the $SIZE_LABEL data set in $DATA (once; reused by later runs)"
  rm -rf "$DATA"
  python3 "$WORK/bin/make_data.py" "$DATA" "$SCALE"
  touch "$DATA.done"
fi
mkdir -p "$EMPTY"
DATA_FILES=$(find "$DATA" -type f | wc -l)
DATA_BYTES=$(du -sb "$DATA" | cut -f1)

# A VM whose one job, bench, hard-links its data, a hard-linked copy of $2 inside the VM tree
# (var/vcap/store/bench-src), into its artifact directory, and whose restore script does
# nothing. The data is inside the tree and found from the script's own path because bbrlocal
# runs the script in a mount namespace with the tree bind-mounted on /var/vcap, and hard links
# cannot cross into a bind mount.
make_vm() {
  local vm=$1 src=$2
  local bbr=$vm/var/vcap/jobs/bench/bin/bbr
  rm -rf "$vm"
  mkdir -p "$bbr" "$vm/var/vcap/instance" "$vm/var/vcap/store"
  cp -al "$src" "$vm/var/vcap/store/bench-src"
  echo acme > "$vm/var/vcap/instance/deployment"
  echo bench > "$vm/var/vcap/instance/name"
  printf '#!/bin/sh\nexec cp -al "$(dirname "$0")/../../../../store/bench-src/." "$BBR_ARTIFACT_DIRECTORY"\n' > "$bbr/backup"
  printf '#!/bin/sh\nexit 0\n' > "$bbr/restore"
  chmod 755 "$bbr/backup" "$bbr/restore"
}

# inventory FILE VM [WRAP]: one instance, bench/0, reached by `[WRAP] bbr-agent --root VM serve`.
inventory() {
  local file=$1 vm=$2 wrap=${3:-}
  printf "deployment: acme\ninstances:\n- group: bench\n  index: 0\n  command: '%s%s --root %s serve'\n" \
    "${wrap:+$wrap }" "$AGENT" "$vm" > "$file"
}

make_vm "$F/vm-data" "$DATA"
make_vm "$F/vm-empty" "$EMPTY"
# `serve` in its cgroup (the wrapper's exec and one write to cgroup.procs more per run, both
# VMs alike, so the drain's subtraction cancels them).
inventory "$WORK/inv-data.yml" "$F/vm-data" "$(in_cg agent)"
inventory "$WORK/inv-empty.yml" "$F/vm-empty" "$(in_cg agent-empty)"

backup() { mkdir -p "$2" && "$AGENT" deployment --inventory "$1" backup --artifact-path "$2"; }
restore() { "$AGENT" deployment --inventory "$1" restore --artifact-path "$2"; }
one_artifact() { find "$1" -mindepth 1 -maxdepth 1 -type d | head -1; }
# BBR's own code on the same VM, through its SSH client and an in-process SSH server.
# With cgroups, its VM commands find bin/bbr-vm/nsenter first on its PATH (they sort themselves).
BBR_PATH=$PATH
[ -z "$CG" ] || BBR_PATH=$WORK/bin/bbr-vm:$PATH
bbr_backup() { mkdir -p "$2" && PATH=$BBR_PATH "$BBRLOCAL" backup --vm "bench/0=$1" --deployment acme --artifact-path "$2" --transport ssh; }
bbr_restore() { PATH=$BBR_PATH "$BBRLOCAL" restore --vm "bench/0=$1" --deployment acme --artifact-path "$2" --transport ssh; }
# The machine's floor for an artifact: hashing it once on one core, and writing it once with
# fsync; each timed alone, and the larger of the two is the floor.
floor_sha() { openssl dgst -sha256 "$1" > /dev/null; }
floor_dd() { dd if="$1" of="$2" bs=1M conv=fsync status=none; }

# The artifacts the restore runs read: made once by bbr-agent itself.
make_artifact() {
  local inv=$1 dir=$2
  if [ -z "$(one_artifact "$dir" 2>/dev/null)" ]; then
    rm -rf "$dir"
    mkdir -p "$dir"
    backup "$inv" "$dir" > "$LOGS/make-$(basename "$dir").log" 2>&1 ||
      { cat "$LOGS/make-$(basename "$dir").log" >&2; exit 1; }
  fi
}
# Rebuilt every run: the data set may have been rebuilt, and the binary changed.
rm -rf "$F/restore-data" "$F/restore-empty"
make_artifact "$WORK/inv-data.yml" "$F/restore-data"
make_artifact "$WORK/inv-empty.yml" "$F/restore-empty"
RESTORE_DATA=$(one_artifact "$F/restore-data")
RESTORE_EMPTY=$(one_artifact "$F/restore-empty")
RESTORE_TAR=$RESTORE_DATA/bench-0-bench.tar
# BBR restores an artifact made by its own backup.
BBR_RESTORE_DATA=
if [ -n "$BBRLOCAL" ]; then
  rm -rf "$F/restore-bbr"
  bbr_backup "$F/vm-data" "$F/restore-bbr" > "$LOGS/make-restore-bbr.log" 2>&1 ||
    { cat "$LOGS/make-restore-bbr.log" >&2; exit 1; }
  BBR_RESTORE_DATA=$(one_artifact "$F/restore-bbr")
fi

# The baselines' own places.
B=$ART/baseline
mkdir -p "$B"

# ---------------------------------------------------------------------------------------------
# Over real SSH (issue 17, target 4): the bench's own sshd on loopback
# ---------------------------------------------------------------------------------------------
# As tests/common/sshd.rs starts one: a fresh host key and client key, root by key only, a
# free port on 127.0.0.1; in the sshd cgroup, so that its CPU (the VM side of the SSH
# connection: key exchange, the cipher, the session, `serve` and the scripts) is counted.
# Stopped at exit (cleanup).
SSH=
SSH_AES=
start_sshd() {
  [ "${SKIP_SSH:-0}" != 1 ] && [ "$(id -u)" = 0 ] && [ -x /usr/sbin/sshd ] || return 1
  command -v ssh >/dev/null && command -v ssh-keygen >/dev/null || return 1
  local d=$WORK/sshd port i
  rm -rf "$d"
  mkdir -m 700 "$d"
  ssh-keygen -q -t ed25519 -N '' -f "$d/host_key" && ssh-keygen -q -t ed25519 -N '' -f "$d/client_key" || return 1
  cp "$d/client_key.pub" "$d/authorized_keys"
  mkdir -p /run/sshd   # its privilege separation directory
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  printf '%s\n' "Port $port" "ListenAddress 127.0.0.1" "HostKey $d/host_key" \
    "AuthorizedKeysFile $d/authorized_keys" "PidFile $d/sshd.pid" "StrictModes no" "UsePAM no" \
    "PermitRootLogin prohibit-password" "PasswordAuthentication no" \
    "KbdInteractiveAuthentication no" "LogLevel INFO" > "$d/sshd_config"
  # shellcheck disable=SC2046 # in_cg's words
  $(in_cg sshd) /usr/sbin/sshd -D -f "$d/sshd_config" -E "$d/sshd.log" < /dev/null &
  SSHD_PID=$!
  SSH="ssh -p $port -i $d/client_key -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR root@127.0.0.1"
  for ((i = 0; i < 100; i++)); do
    $SSH true 2> /dev/null && break
    sleep 0.1
  done
  $SSH true || { say "the bench's sshd does not answer; its log:"; cat "$d/sshd.log" >&2; return 1; }
  SSH_AES="ssh -c aes128-gcm@openssh.com ${SSH#ssh }"
  # What OpenSSH negotiated, with its default ciphers and with -c aes128-gcm@openssh.com.
  local kex kex_aes
  # ssh -v says `debug1: kex: server->client cipher: NAME MAC: NAME compression: none`.
  kex=$(${SSH/-o LogLevel=ERROR/-v} true 2>&1 | tr -d '\r' | sed -n 's/^debug1: kex: server->client cipher: \([^ ]*\) MAC: \([^ ]*\).*/\1 (MAC \2)/p' | head -1)
  kex_aes=$(${SSH_AES/-o LogLevel=ERROR/-v} true 2>&1 | tr -d '\r' | sed -n 's/^debug1: kex: server->client cipher: \([^ ]*\) MAC: \([^ ]*\).*/\1 (MAC \2)/p' | head -1)
  echo "sshd: $(/usr/sbin/sshd -V 2>&1 | head -1 | cut -d, -f1) on 127.0.0.1:$port, client $(ssh -V 2>&1 | cut -d, -f1); server->client cipher negotiated: ${kex:-?} by default, ${kex_aes:-?} with ssh -c aes128-gcm@openssh.com" >> "$FACTS"
  inventory "$WORK/inv-ssh.yml" "$F/vm-data" "$SSH"
  inventory "$WORK/inv-ssh-aes.yml" "$F/vm-data" "$SSH_AES"
}
if [ "${SKIP_SSH:-0}" != 1 ]; then
  say "target 4: starting the bench's own sshd on 127.0.0.1"
  start_sshd || { say "no sshd: the backup over real SSH is not measured"; SSH=; }
fi

# ---------------------------------------------------------------------------------------------
# 1. Drain: deployment backup vs BBR's sequence vs the one-pass pipeline
# ---------------------------------------------------------------------------------------------
pressure "drain"
say "drain: $SIZE_LABEL ($DATA_FILES files), 1 warm-up + $RUNS runs of each, alternating"
for RUN in $(seq 0 "$RUNS"); do
  settle
  cg_mark agent
  timed agent_backup backup "$WORK/inv-data.yml" "$ART/agent"
  cg_since vm_agent_backup
  ns=$(line_ns "(copied from the VM:|drain:)" "$LOGS/agent_backup.$RUN")
  record agent_drain_line "$RUN" "${ns:-0}"
  if [ "$RUN" = 0 ]; then
    # Once: the three tools must agree on every checksum.
    tar -C "$DATA" -c . > "$B/check.tar"
    (cd "$DATA" && find . -type f | xargs shasum -a 256) > "$B/check.vm"
    python3 "$WORK/bin/tar_sha256.py" "$B/check.tar" > "$B/check.op"
    python3 "$WORK/bin/same_sums.py" "$(one_artifact "$ART/agent")/metadata" "$B/check.vm" "$B/check.op" >> "$FACTS"
    rm -f "$B/check.tar" "$B/check.vm" "$B/check.op"
  fi
  rm -rf "$ART/agent"
  settle

  cg_mark agent-empty
  timed agent_backup_empty backup "$WORK/inv-empty.yml" "$ART/agent"
  cg_since vm_agent_backup_empty
  rm -rf "$ART/agent"
  settle

  if [ -n "$BBRLOCAL" ]; then
    cg_mark bbr-tar bbr-shasum bbr-scripts bbr-other
    timed bbrlocal_backup bbr_backup "$F/vm-data" "$ART/bbr"
    cg_since vm_bbrlocal_backup
    rm -rf "$ART/bbr"
    settle
  fi

  # Target 4: the same backup through the bench's sshd, with OpenSSH's default cipher and
  # with AES-GCM; the sshd group is the VM side of it.
  if [ -n "$SSH" ]; then
    cg_mark sshd
    timed agent_ssh_backup backup "$WORK/inv-ssh.yml" "$ART/agent"
    cg_since vm_agent_ssh_backup
    rm -rf "$ART/agent"
    settle
    cg_mark sshd
    timed agent_ssh_aes_backup backup "$WORK/inv-ssh-aes.yml" "$ART/agent"
    cg_since vm_agent_ssh_aes_backup
    rm -rf "$ART/agent"
    settle
  fi
  timed floor_sha floor_sha "$RESTORE_TAR"
  timed floor_dd floor_dd "$RESTORE_TAR" "$B/floor.tar"
  rm -f "$B/floor.tar"
  settle

  # The backup script's own work, measured alone: a hard-link copy of the data set.
  timed cp_al cp -al "$DATA" "$B/cpal"
  rm -rf "$B/cpal"
  settle

  # Target 3: the scripts' own share of the agent's VM-side CPU: the VM's backup script alone,
  # run as the agent runs it (the script itself, its artifact directory in the environment),
  # counted in a cgroup the same way.
  if [ -n "$CG" ]; then
    mkdir -p "$B/script-art"
    cg_mark script
    # shellcheck disable=SC2046 # in_cg's words
    timed script_backup env BBR_ARTIFACT_DIRECTORY="$B/script-art/" $(in_cg script) "$F/vm-data/var/vcap/jobs/bench/bin/bbr/backup"
    cg_since vm_script_backup
    rm -rf "$B/script-art"
    settle
  fi

  # BBR: the VM streams `tar -c` out, then checksums its files with shasum; the operator side
  # re-reads the downloaded tar to checksum every entry.
  timed bbr_tar sh -c 'tar -C "$1" -c . > "$2"' - "$DATA" "$B/artifact.tar"
  timed bbr_vm_shasum sh -c 'cd "$1" && find . -type f | xargs shasum -a 256 > "$2"' - "$DATA" "$B/vm.sums"
  timed bbr_operator_sums python3 "$WORK/bin/tar_sha256.py" "$B/artifact.tar"
  rm -f "$B/artifact.tar" "$B/vm.sums"
  settle

  timed one_pass sh -c 'tar -C "$1" -c . | tee "$2" | openssl dgst -sha256' - "$DATA" "$B/artifact.tar"
  rm -f "$B/artifact.tar"
  settle

  # Context: the same pipeline, then the tar flushed to disk, as bbr-agent does (fsync).
  timed one_pass_fsync sh -c 'tar -C "$1" -c . | tee "$2" | openssl dgst -sha256 && sync "$2"' - "$DATA" "$B/artifact.tar"
  rm -f "$B/artifact.tar"
done

# ---------------------------------------------------------------------------------------------
# 2. Restore: deployment restore vs tar -x then shasum
# ---------------------------------------------------------------------------------------------
pressure "restore"
say "restore: $SIZE_LABEL, 1 warm-up + $RUNS runs of each, alternating"
for RUN in $(seq 0 "$RUNS"); do
  settle
  cg_mark agent
  timed agent_restore restore "$WORK/inv-data.yml" "$RESTORE_DATA"
  cg_since vm_agent_restore
  ns=$(line_ns "(copied to the VM:|copy:)" "$LOGS/agent_restore.$RUN")
  record agent_copy_line "$RUN" "${ns:-0}"
  settle

  cg_mark agent-empty
  timed agent_restore_empty restore "$WORK/inv-empty.yml" "$RESTORE_EMPTY"
  cg_since vm_agent_restore_empty
  settle

  if [ -n "$BBRLOCAL" ]; then
    cg_mark bbr-tar bbr-shasum bbr-scripts bbr-other
    timed bbrlocal_restore bbr_restore "$F/vm-data" "$BBR_RESTORE_DATA"
    cg_since vm_bbrlocal_restore
    settle
  fi
  if [ -n "$CG" ]; then
    cg_mark script
    # shellcheck disable=SC2046 # in_cg's words
    timed script_restore env BBR_ARTIFACT_DIRECTORY="$B/" $(in_cg script) "$F/vm-data/var/vcap/jobs/bench/bin/bbr/restore"
    cg_since vm_script_restore
  fi
  timed floor_sha_r floor_sha "$RESTORE_TAR"
  timed floor_dd_r floor_dd "$RESTORE_TAR" "$B/floor.tar"
  rm -f "$B/floor.tar"
  settle

  mkdir -p "$B/restored"
  timed bbr_restore_tar_x tar -C "$B/restored" -xf "$RESTORE_TAR"
  timed bbr_restore_shasum sh -c 'cd "$1" && find . -type f | xargs shasum -a 256 > /dev/null' - "$B/restored"
  rm -rf "$B/restored"
  settle

  # Context: BBR also validates the local artifact before it restores (it re-reads every tar
  # and checksums each entry): the same operator-side step as in the backup.
  timed bbr_restore_validate python3 "$WORK/bin/tar_sha256.py" "$RESTORE_TAR"

  # One pass of standard tools: the tar read once, hashed on the side while it is unpacked.
  mkdir -p "$B/restored"
  timed restore_one_pass bash -c 'tee >(openssl dgst -sha256 > /dev/null) < "$2" | tar -C "$1" -x' - "$B/restored" "$RESTORE_TAR"
  rm -rf "$B/restored"
done

# ---------------------------------------------------------------------------------------------
# 3. Memory: peak RSS of the driver and of the agent
# ---------------------------------------------------------------------------------------------
pressure "memory"
MEM=$WORK/mem
rm -rf "$MEM"
mkdir -p "$MEM"
# mem_run LABEL VM: one backup, then one restore of what it made, each process under
# /usr/bin/time. The driver's figure covers its whole process tree (wait4 reports the largest
# of it and its waited-for descendants), so it is an upper bound for the driver alone.
mem_run() {
  local label=$1 vm=$2 art=$F/mem-art-$1 s
  rm -rf "$art"
  mkdir -p "$art"
  inventory "$MEM/inv-$label.yml" "$vm" "/usr/bin/time -f %M -o $MEM/agent-backup-$label.kib"
  s=$(now)
  /usr/bin/time -f %M -o "$MEM/driver-backup-$label.kib" \
    "$AGENT" deployment --inventory "$MEM/inv-$label.yml" backup --artifact-path "$art" \
    > "$LOGS/mem-backup-$label.log" 2>&1 || { cat "$LOGS/mem-backup-$label.log" >&2; exit 1; }
  record "mem_backup_$label" 1 $(($(now) - s))
  settle
  inventory "$MEM/inv-$label.yml" "$vm" "/usr/bin/time -f %M -o $MEM/agent-restore-$label.kib"
  s=$(now)
  /usr/bin/time -f %M -o "$MEM/driver-restore-$label.kib" \
    "$AGENT" deployment --inventory "$MEM/inv-$label.yml" restore --artifact-path "$(one_artifact "$art")" \
    > "$LOGS/mem-restore-$label.log" 2>&1 || { cat "$LOGS/mem-restore-$label.log" >&2; exit 1; }
  record "mem_restore_$label" 1 $(($(now) - s))
  rm -rf "$art"
  settle
}
say "memory: peak RSS, $SIZE_LABEL artifact"
mem_run "$SIZE_LABEL" "$F/vm-data"

if [ "$SKIP_4G" != 1 ]; then
  # The 4 GiB file, its artifact and the restore's unpacked copy: 12 GiB at the peak.
  free_gib=$(df -k --output=avail "$WORK" | awk 'NR == 2 { print int($1 / 1048576) }')
  need_gib=12
  [ -f "$F/data-4G.done" ] && need_gib=8
  if [ "$FS_MODE" = loop ]; then
    fs_gib=$(df -k --output=avail "$F" | awk 'NR == 2 { print int($1 / 1048576) }')
    [ "$fs_gib" -lt "$free_gib" ] && free_gib=$fs_gib
  fi
  if [ "$free_gib" -lt "$need_gib" ]; then
    echo "4 GiB check skipped: $free_gib GiB free, it needs $need_gib" | tee -a "$FACTS" >&2
  else
    say "memory: peak RSS, 4 GiB artifact (one 4 GiB file)"
    if [ ! -f "$F/data-4G.done" ]; then
      rm -rf "$F/data-4G"
      mkdir -p "$F/data-4G"
      # Random bytes at disk speed: an AES-CTR keystream, 4 GiB of it.
      { openssl enc -aes-128-ctr -nosalt -pbkdf2 -pass pass:bbr-agent-bench < /dev/zero 2>/dev/null || true; } |
        head -c $((4 << 30)) > "$F/data-4G/big.bin"
      touch "$F/data-4G.done"
    fi
    make_vm "$F/vm-4G" "$F/data-4G"
    settle
    mem_run 4G "$F/vm-4G"
  fi
fi

# ---------------------------------------------------------------------------------------------
# 4. Fleet: N VMs x 3 jobs of no-op scripts, --max-in-flight 50, vs the scripts in a loop
# ---------------------------------------------------------------------------------------------
FLEET=$F/fleet
max_vms=0
for n in $FLEET_SIZES; do [ "$n" -gt "$max_vms" ] && max_vms=$n; done
if [ ! -f "$FLEET.$max_vms.done" ]; then
  say "building a fleet of $max_vms VMs x 3 jobs"
  rm -rf "$FLEET" "$FLEET".*.done
  for ((i = 0; i < max_vms; i++)); do
    vm=$FLEET/vm-$i
    mkdir -p "$vm/var/vcap/instance"
    echo acme > "$vm/var/vcap/instance/deployment"
    echo vm > "$vm/var/vcap/instance/name"
    for job in j1 j2 j3; do
      mkdir -p "$vm/var/vcap/jobs/$job/bin/bbr"
      for script in pre-backup-lock backup post-backup-unlock; do
        printf '#!/bin/sh\nexit 0\n' > "$vm/var/vcap/jobs/$job/bin/bbr/$script"
        chmod 755 "$vm/var/vcap/jobs/$job/bin/bbr/$script"
      done
    done
  done
  touch "$FLEET.$max_vms.done"
fi
for n in $FLEET_SIZES; do
  {
    echo "deployment: acme"
    echo "instances:"
    for ((i = 0; i < n; i++)); do
      printf -- "- group: vm\n  index: %d\n  command: '%s --root %s serve'\n" "$i" "$AGENT" "$FLEET/vm-$i"
    done
  } > "$WORK/inv-fleet-$n.yml"
  [ -z "$BEFORE_AGENT" ] || sed "s#command: '$AGENT #command: '$BEFORE_AGENT #" "$WORK/inv-fleet-$n.yml" > "$WORK/inv-fleet-before-$n.yml"
done

# BBR's order, one script at a time: every lock, every backup, every unlock.
script_loop() {
  local n=$1 script i job
  for script in pre-backup-lock backup post-backup-unlock; do
    for ((i = 0; i < n; i++)); do
      for job in j1 j2 j3; do
        "$FLEET/vm-$i/var/vcap/jobs/$job/bin/bbr/$script"
      done
    done
  done
}

# One fleet backup of N VMs by a build, timed as fleet_<name>_<N>: fleet_run N NAME AGENT INVENTORY.
fleet_run() {
  mkdir -p "$ART/fleet"
  timed "fleet_$2_$1" "$3" deployment --inventory "$4" \
    --max-in-flight "$MAX_IN_FLIGHT" backup --artifact-path "$ART/fleet"
  rm -rf "$ART/fleet"
}

for n in $FLEET_SIZES; do
  pressure "fleet $n"
  say "fleet: $n VMs x 3 jobs ($((n * 9)) scripts), 1 warm-up + $RUNS runs of each, alternating"
  for RUN in $(seq 0 "$RUNS"); do
    # The two builds swap places every round: two runs of one build took 0.90x of each other's
    # wall at 1,000 VMs when they always ran in the same order (docs/benchmarks.md, stop 22).
    if [ -n "$BEFORE_AGENT" ] && [ $((RUN % 2)) -eq 1 ]; then
      fleet_run "$n" before "$BEFORE_AGENT" "$WORK/inv-fleet-before-$n.yml"
      fleet_run "$n" agent "$AGENT" "$WORK/inv-fleet-$n.yml"
    else
      fleet_run "$n" agent "$AGENT" "$WORK/inv-fleet-$n.yml"
      [ -z "$BEFORE_AGENT" ] || fleet_run "$n" before "$BEFORE_AGENT" "$WORK/inv-fleet-before-$n.yml"
    fi
    timed "fleet_loop_$n" script_loop "$n"
  done
done
# The driver's peak memory with the largest fleet.
mkdir -p "$ART/fleet"
/usr/bin/time -f %M -o "$MEM/driver-fleet-$max_vms.kib" "$AGENT" deployment \
  --inventory "$WORK/inv-fleet-$max_vms.yml" --max-in-flight "$MAX_IN_FLIGHT" backup \
  --artifact-path "$ART/fleet" > "$LOGS/mem-fleet.log" 2>&1 || { cat "$LOGS/mem-fleet.log" >&2; exit 1; }
rm -rf "$ART/fleet"

# ---------------------------------------------------------------------------------------------
# 5. Start-up: `bbr-agent list` over 200 jobs without metadata scripts
# ---------------------------------------------------------------------------------------------
LISTVM=$F/vm-list
if [ ! -f "$LISTVM.done" ]; then
  rm -rf "$LISTVM"
  for ((i = 0; i < START_JOBS; i++)); do
    bbr=$LISTVM/var/vcap/jobs/job-$i/bin/bbr
    mkdir -p "$bbr"
    printf '#!/bin/sh\nexit 0\n' > "$bbr/backup"
    printf '#!/bin/sh\nexit 0\n' > "$bbr/restore"
    chmod 755 "$bbr/backup" "$bbr/restore"
  done
  touch "$LISTVM.done"
fi
"$AGENT" --root "$LISTVM" list > "$LOGS/list.out"
settle
quiet
pressure "start-up"
say "start-up: bbr-agent list over $START_JOBS jobs, $STARTUP_RUNS runs"
if command -v hyperfine >/dev/null; then
  hyperfine -N --warmup 5 --runs "$STARTUP_RUNS" --export-json "$WORK/startup.json" \
    "$AGENT --root $LISTVM list" \
    "find $LISTVM/var/vcap/jobs/ -path */bin/bbr/* -type f" > "$LOGS/hyperfine.log" 2>&1
  python3 - "$WORK/startup.json" >> "$RESULTS" <<'PY'
import json, sys
names = ["startup_list", "startup_find"]
for name, result in zip(names, json.load(open(sys.argv[1]))["results"]):
    for i, t in enumerate(result["times"], 1):
        print(f"{name}\t{i}\t{int(t * 1e9)}")
PY
  echo "start-up timed with $(hyperfine --version)" >> "$FACTS"
else
  for ((RUN = 0; RUN <= STARTUP_RUNS; RUN++)); do
    timed startup_list "$AGENT" --root "$LISTVM" list
    timed startup_find find "$LISTVM/var/vcap/jobs/" -path '*/bin/bbr/*' -type f
  done
  echo "start-up timed with a date +%s%N loop (no hyperfine)" >> "$FACTS"
fi

# ---------------------------------------------------------------------------------------------
# Optional: a profile of one drain and one restore
# ---------------------------------------------------------------------------------------------
if [ "${PROFILE:-0}" = 1 ]; then
  P=$WORK/profile
  rm -rf "$P" "$F/profile-art"
  mkdir -p "$P" "$F/profile-art"
  say "profile: perf record -e cpu-clock -g of one drain and one restore (into $P)"
  settle
  perf record -q -e cpu-clock -F 2000 -g -o "$P/backup.data" -- \
    "$AGENT" deployment --inventory "$WORK/inv-data.yml" backup --artifact-path "$F/profile-art" > "$P/backup.log" 2>&1
  rm -rf "$F/profile-art"
  settle
  perf record -q -e cpu-clock -F 2000 -g -o "$P/restore.data" -- \
    "$AGENT" deployment --inventory "$WORK/inv-data.yml" restore --artifact-path "$RESTORE_DATA" > "$P/restore.log" 2>&1
  for k in backup restore; do
    perf report -i "$P/$k.data" --stdio --no-children -g none --sort pid,comm,dso,sym 2>/dev/null | grep -v '^$' > "$P/$k.flat.txt" || true
    perf report -i "$P/$k.data" --stdio --children --sort sym 2>/dev/null > "$P/$k.children.txt" || true
  done
fi

pressure "end"
for f in "$MEM"/*.kib; do
  printf '%s\t%s\n' "$(basename "$f" .kib)" "$(tail -1 "$f")"
done > "$MEM/peak-rss.tsv"

# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------
python3 - "$RESULTS" "$MEM/peak-rss.tsv" "$FACTS" "$SIZE_LABEL" "$DATA_FILES" "$DATA_BYTES" "$FLEET_SIZES" > "$SUMMARY" <<'PY'
import statistics, sys
from collections import defaultdict

results, rss_file, facts, size, files, nbytes, fleet = sys.argv[1:]
wall, cpu = defaultdict(dict), defaultdict(dict)
for line in open(results):
    name, run, w, c = (line.rstrip("\n").split("\t") + [""])[:4]
    wall[name][int(run)] = int(w) / 1e9
    if c:
        cpu[name][int(run)] = int(c) / 1e9

def measured(table, name):
    """The measured runs (the warm-up, run 0, left out)."""
    return [v for r, v in sorted(table[name].items()) if r > 0]

def med(name, table=wall):
    xs = measured(table, name)
    return statistics.median(xs) if xs else 0

def per_run_sum(names, table=wall):
    """The median over runs of the sum of several steps of one sequence."""
    keys = set.intersection(*(set(k for k in table[n] if k > 0) for n in names))
    return statistics.median(sum(table[n][k] for n in names) for k in keys) if keys else 0

def s(x):
    if not x:
        return "n/a"
    return f"{x:.3f} s" if x >= 0.1 else f"{x * 1000:.1f} ms"

def spread(name):
    xs = measured(wall, name)
    return f"{s(min(xs))} .. {s(max(xs))}" if xs else "n/a"

mb = int(nbytes) / 1e6

def rate(x):
    return f"{mb / x:.0f}" if x else "n/a"

def ratio(a, b):
    return f"{a / b:.2f}x" if a and b else "n/a"

out = []
p = out.append
p("### Machine and run\n")
p("```")
p(open(facts).read().rstrip())
p("```\n")
p("Wall times are medians of the measured runs (the warm-up run left out); CPU is user + system")
p("time of every process of the command, also a median; MB/s is the data set over the wall time.\n")

def section(rows, derived):
    p("| what | wall | min .. max | CPU | MB/s |")
    p("|---|---:|---:|---:|---:|")
    for label, name in rows:
        c = med(name, cpu)
        p(f"| {label} | {s(med(name))} | {spread(name)} | {s(c) if c else ''} | {rate(med(name))} |")
    for label, w, c in derived:
        p(f"| **{label}** | **{s(w)}** | | {s(c)} | {rate(w)} |")
    p("")

def per_run_max(names, table=wall):
    """The median over runs of the larger of several measures taken in the same run."""
    keys = set.intersection(*(set(k for k in table[n] if k > 0) for n in names))
    return statistics.median(max(table[n][k] for n in names) for k in keys) if keys else 0

# 0. Beside BBR's own code (issue 17)
floor_b, floor_r = per_run_max(["floor_sha", "floor_dd"]), per_run_max(["floor_sha_r", "floor_dd_r"])
ab, bb = med("agent_backup"), med("bbrlocal_backup")
ar, br = med("agent_restore"), med("bbrlocal_restore")
p(f"### 0. Beside BBR's own code: {size} data set, whole commands, {len(measured(wall, 'agent_backup'))} measured runs\n")
p("bbr-agent `deployment` over the local `serve` transport; BBR's own orchestrator, instance and")
p("SSH code (`bbrlocal --transport ssh`, an in-process SSH server per VM) on the same VM tree.")
p("The floor is the larger of `openssl dgst -sha256` of the artifact's tar and `dd conv=fsync`")
p("of it, both timed in the same run.\n")
section([
    ("bbr-agent `deployment backup`", "agent_backup"),
    ("BBR: `bbrlocal backup --transport ssh`", "bbrlocal_backup"),
    ("bbr-agent `deployment restore`", "agent_restore"),
    ("BBR: `bbrlocal restore --transport ssh` (of its own artifact)", "bbrlocal_restore"),
    ("floor: `openssl dgst -sha256` of the tar (backup part)", "floor_sha"),
    ("floor: `dd conv=fsync` of the tar (backup part)", "floor_dd"),
    ("floor: `openssl dgst -sha256` of the tar (restore part)", "floor_sha_r"),
    ("floor: `dd conv=fsync` of the tar (restore part)", "floor_dd_r"),
], [
    ("the machine's floor, backup part (max of the two, per run)", floor_b, 0),
    ("the machine's floor, restore part (max of the two, per run)", floor_r, 0),
])
def meets(v, ok):
    return "n/a" if not v else ("yes" if ok(v) else "NO")
p("| ratio | value | target | met |")
p("|---|---:|---:|---|")
p(f"| BBR backup / bbr-agent backup | {ratio(bb, ab)} | >= 10x | {meets(ab and bb and bb / ab, lambda v: v >= 10)} |")
p(f"| bbr-agent backup / floor | {ratio(ab, floor_b)} | <= 1.25x | {meets(ab and floor_b and ab / floor_b, lambda v: v <= 1.25)} |")
p(f"| BBR restore / bbr-agent restore | {ratio(br, ar)} | >= 6x | {meets(ar and br and br / ar, lambda v: v >= 6)} |")
p(f"| bbr-agent restore / floor | {ratio(ar, floor_r)} | <= 1.5x | {meets(ar and floor_r and ar / floor_r, lambda v: v <= 1.5)} |")
p(f"| CPU: BBR backup / bbr-agent backup (both ends) | {ratio(med('bbrlocal_backup', cpu), med('agent_backup', cpu))} | (context) | |")
p(f"| CPU: BBR restore / bbr-agent restore (both ends) | {ratio(med('bbrlocal_restore', cpu), med('agent_restore', cpu))} | (context) | |")
gib = int(nbytes) / (1 << 30)
def per_run(names, minus=(), table=cpu):
    """The median over runs of the sum of `names` minus the sum of `minus`, all from one run."""
    keys = set.intersection(*(set(k for k in table[n] if k > 0) for n in list(names) + list(minus)))
    return statistics.median(sum(table[n][k] for n in names) - sum(table[n][k] for n in minus) for k in keys) if keys else 0
vm_b = per_run(["vm_agent_backup_agent"], ["vm_script_backup_script"])
bbr_vm_b = per_run(["vm_bbrlocal_backup_bbr-tar", "vm_bbrlocal_backup_bbr-shasum"])
vm_r = per_run(["vm_agent_restore_agent"], ["vm_script_restore_script"])
bbr_vm_r = per_run(["vm_bbrlocal_restore_bbr-tar", "vm_bbrlocal_restore_bbr-shasum"])
p(f"| CPU on the VM per GiB, backup: bbr-agent / BBR's `tar` + `shasum` (target 3) | {ratio(vm_b, bbr_vm_b)} | <= 0.5x | {meets(vm_b and bbr_vm_b and vm_b / bbr_vm_b, lambda v: v <= 0.5)} |")
p(f"| CPU on the VM per GiB, restore: bbr-agent / BBR's `tar -x` + `shasum` | {ratio(vm_r, bbr_vm_r)} | (context) | |")
sb, sba = med("agent_ssh_backup"), med("agent_ssh_aes_backup")
p(f"| over real SSH (target 4): BBR backup (its in-process SSH) / bbr-agent backup through sshd, default cipher | {ratio(bb, sb)} | (report) | |")
p(f"| over real SSH (target 4): the same, bbr-agent with `-c aes128-gcm@openssh.com` | {ratio(bb, sba)} | (report) | |")
p("")

# Target 3: the VM side's CPU, from cgroup v2 counters
def cs(x):
    return s(x) if x else "n/a"
def pg(x):
    return f"{x / gib:.3f} s" if x else "n/a"
p(f"#### Target 3: CPU on the VM ({size} data set, {gib:.3f} GiB), cgroup v2 `cpu.stat` usage_usec\n")
p("Each figure is the CPU (user + system) of what ran in one cgroup during one run, a median of")
p("the measured runs; a difference or a sum is taken within each run, then the median. bbr-agent:")
p("`serve` and every process it started (the scripts, in their own cgroups below it). BBR:")
p("bbrlocal's VM commands (each `sudo ...` under `bash -c`, as sshd would run it) sorted by kind;")
p("its in-process SSH server's CPU is in bbrlocal's own process and in neither figure.\n")
p("| what runs on the VM | CPU | per GiB |")
p("|---|---:|---:|")
for label, x in [
    ("bbr-agent backup: `serve` and its scripts", med("vm_agent_backup_agent", cpu)),
    ("the backup script alone (`cp -al` of the data set)", med("vm_script_backup_script", cpu)),
    ("context: bbr-agent backup of the empty VM: `serve` and its script (fixed cost)", med("vm_agent_backup_empty_agent-empty", cpu)),
    ("**bbr-agent backup, its own** (`serve` and scripts - the script alone, per run)", vm_b),
    ("BBR backup: `sudo tar -C DIR -c .`", med("vm_bbrlocal_backup_bbr-tar", cpu)),
    ("BBR backup: `sudo sh -c 'cd DIR && find . -type f \\| xargs shasum -a 256'`", med("vm_bbrlocal_backup_bbr-shasum", cpu)),
    ("**BBR backup: `tar` + `shasum`** (per run)", bbr_vm_b),
    ("context: BBR backup: the job's scripts (`sudo VARS .../bin/bbr/backup`)", med("vm_bbrlocal_backup_bbr-scripts", cpu)),
    ("context: BBR backup: its other VM commands (`find` of the scripts, `stat`, `mkdir`, `du`, `rm -rf`)", med("vm_bbrlocal_backup_bbr-other", cpu)),
    ("bbr-agent restore: `serve` and its scripts", med("vm_agent_restore_agent", cpu)),
    ("the restore script alone (`exit 0`)", med("vm_script_restore_script", cpu)),
    ("context: bbr-agent restore of the empty artifact (fixed cost)", med("vm_agent_restore_empty_agent-empty", cpu)),
    ("**bbr-agent restore, its own** (per run)", vm_r),
    ("BBR restore: `sudo sh -c 'tar -C DIR -x'`", med("vm_bbrlocal_restore_bbr-tar", cpu)),
    ("BBR restore: `sudo sh -c '... xargs shasum -a 256'`", med("vm_bbrlocal_restore_bbr-shasum", cpu)),
    ("**BBR restore: `tar -x` + `shasum`** (per run)", bbr_vm_r),
    ("context: BBR restore: its other VM commands", med("vm_bbrlocal_restore_bbr-other", cpu)),
]:
    p(f"| {label} | {cs(x)} | {pg(x)} |")
p("")

# Target 4: over real SSH
vs, vsa = med("vm_agent_ssh_backup_sshd", cpu), med("vm_agent_ssh_aes_backup_sshd", cpu)
def tot(name, vm):
    return per_run([name, vm]) if vm in cpu and name in cpu else 0
p(f"#### Target 4: the {size} backup over real SSH (the bench's sshd on 127.0.0.1)\n")
p("The inventory's command is `ssh -p PORT ... root@127.0.0.1 <agent> --root <vm> serve`. Operator")
p("side: the driver and its `ssh` client (bash `times` of the command); VM side: the sshd's cgroup")
p("(its sessions, `serve`, the scripts). BBR's figure is the whole `bbrlocal` command, its SSH")
p("client, in-process SSH server and VM commands in one; bbrlocal cannot use a real sshd.\n")
p("| what | wall | min .. max | CPU, operator side | CPU, VM side | CPU, both | VM side - script, per GiB |")
p("|---|---:|---:|---:|---:|---:|---:|")
for label, name, vm in [
    ("bbr-agent through sshd, OpenSSH's default cipher", "agent_ssh_backup", "vm_agent_ssh_backup_sshd"),
    ("bbr-agent through sshd, `ssh -c aes128-gcm@openssh.com`", "agent_ssh_aes_backup", "vm_agent_ssh_aes_backup_sshd"),
    ("context: bbr-agent over the local `serve` pipe", "agent_backup", "vm_agent_backup_agent"),
]:
    own = per_run([vm], ["vm_script_backup_script"])
    p(f"| {label} | {s(med(name))} | {spread(name)} | {cs(med(name, cpu) - (med(vm, cpu) if name == 'agent_backup' else 0))} "
      f"| {cs(med(vm, cpu))} | {cs(tot(name, vm) if name != 'agent_backup' else med(name, cpu))} | {pg(own)} |")
p(f"| BBR: `bbrlocal backup --transport ssh` (in-process SSH server) | {s(bb)} | {spread('bbrlocal_backup')} | | | {cs(med('bbrlocal_backup', cpu))} | |")
p("")
p("| ratio | value |")
p("|---|---:|")
p(f"| wall: BBR / bbr-agent through sshd (default cipher) | {ratio(bb, sb)} |")
p(f"| wall: BBR / bbr-agent through sshd (aes128-gcm) | {ratio(bb, sba)} |")
p(f"| CPU, both sides: BBR / bbr-agent through sshd (default cipher) | {ratio(med('bbrlocal_backup', cpu), tot('agent_ssh_backup', 'vm_agent_ssh_backup_sshd'))} |")
p(f"| CPU, both sides: BBR / bbr-agent through sshd (aes128-gcm) | {ratio(med('bbrlocal_backup', cpu), tot('agent_ssh_aes_backup', 'vm_agent_ssh_aes_backup_sshd'))} |")
p(f"| wall: through sshd (default cipher) / over the local pipe | {ratio(sb, ab)} |")
p(f"| wall: through sshd (default cipher) / through sshd (aes128-gcm) | {ratio(sb, sba)} |")
p("")

# 1. Drain
full, empty = med("agent_backup"), med("agent_backup_empty")
drain = full - empty
drain_cpu = med("agent_backup", cpu) - med("agent_backup_empty", cpu)
bbr_steps = ["bbr_tar", "bbr_vm_shasum", "bbr_operator_sums"]
bbr, bbr_cpu = per_run_sum(bbr_steps), per_run_sum(bbr_steps, cpu)
one = med("one_pass")
p(f"### 1. Drain: {size} artifact ({files} files, {mb:.0f} MB), {len(measured(wall, 'agent_backup'))} measured runs\n")
section([
    ("bbr-agent `deployment backup`, whole command", "agent_backup"),
    ("bbr-agent `deployment backup`, empty artifact (fixed cost)", "agent_backup_empty"),
    ("bbr-agent's own drain line (`drain: ... in D`)", "agent_drain_line"),
    ("the backup script's `cp -al` of the data set, alone", "cp_al"),
    ("BBR: `tar -c > artifact.tar`", "bbr_tar"),
    ("BBR: `find \\| xargs shasum -a 256` on the VM", "bbr_vm_shasum"),
    ("BBR: operator re-reads the tar, SHA-256 per entry (Python tarfile + hashlib)", "bbr_operator_sums"),
    ("one-pass `tar -c \\| tee artifact.tar \\| openssl dgst -sha256`", "one_pass"),
    ("context: one-pass, then `sync artifact.tar` (fsync, as bbr-agent does)", "one_pass_fsync"),
], [
    ("bbr-agent drain = whole command - empty-artifact command", drain, drain_cpu),
    ("BBR's sequence (its three steps, summed per run)", bbr, bbr_cpu),
])
p("| ratio | value | target | met |")
p("|---|---:|---:|---|")
p(f"| BBR's sequence / bbr-agent drain | {ratio(bbr, drain)} | >= 4x | {'yes' if drain and bbr / drain >= 4 else 'NO'} |")
p(f"| one-pass pipeline / bbr-agent drain | {ratio(one, drain)} | >= 1x | {'yes' if drain and one / drain >= 1 else 'NO'} |")
p(f"| BBR's sequence / bbr-agent whole command | {ratio(bbr, full)} | (context) | |")
p(f"| one-pass pipeline / bbr-agent whole command | {ratio(one, full)} | (context) | |")
p(f"| BBR's sequence / bbr-agent drain line | {ratio(bbr, med('agent_drain_line'))} | (context) | |")
p(f"| one-pass pipeline / bbr-agent drain line | {ratio(one, med('agent_drain_line'))} | (context) | |")
p(f"| one-pass + fsync / bbr-agent drain | {ratio(med('one_pass_fsync'), drain)} | (context) | |")
def best(names):
    """The fastest measured run of a sequence (the least disturbed by anything else)."""
    keys = set.intersection(*(set(k for k in wall[n] if k > 0) for n in names))
    return min(sum(wall[n][k] for n in names) for k in keys) if keys else 0
best_drain = best(["agent_backup"]) - best(["agent_backup_empty"])
p(f"| best runs: BBR's sequence / bbr-agent drain | {ratio(best(bbr_steps), best_drain)} | (context) | |")
p(f"| best runs: one-pass pipeline / bbr-agent drain | {ratio(best(['one_pass']), best_drain)} | (context) | |")
p(f"| CPU: BBR's sequence / bbr-agent drain | {ratio(bbr_cpu, drain_cpu)} | (context) | |")
p(f"| CPU: one-pass pipeline / bbr-agent drain | {ratio(med('one_pass', cpu), drain_cpu)} | (context) | |")
p("")

# 2. Restore
rfull, rempty = med("agent_restore"), med("agent_restore_empty")
rsend = rfull - rempty
rsend_cpu = med("agent_restore", cpu) - med("agent_restore_empty", cpu)
base_steps = ["bbr_restore_tar_x", "bbr_restore_shasum"]
rbbr, rbbr_cpu = per_run_sum(base_steps), per_run_sum(base_steps, cpu)
full_steps = base_steps + ["bbr_restore_validate"]
rall, rall_cpu = per_run_sum(full_steps), per_run_sum(full_steps, cpu)
p(f"### 2. Restore send: {size} artifact, {len(measured(wall, 'agent_restore'))} measured runs\n")
section([
    ("bbr-agent `deployment restore`, whole command", "agent_restore"),
    ("bbr-agent `deployment restore`, empty artifact (fixed cost)", "agent_restore_empty"),
    ("bbr-agent's own copy line (`copy: ... in D`)", "agent_copy_line"),
    ("`tar -x`", "bbr_restore_tar_x"),
    ("`find \\| xargs shasum -a 256` of the restored files", "bbr_restore_shasum"),
    ("context: BBR's local validation before a restore (re-read + SHA-256 per entry)", "bbr_restore_validate"),
    ("one-pass `tee >(openssl dgst -sha256) < artifact.tar \\| tar -x`", "restore_one_pass"),
], [
    ("bbr-agent restore send = whole command - empty-artifact command", rsend, rsend_cpu),
    ("`tar -x` then `find \\| xargs shasum` (summed per run)", rbbr, rbbr_cpu),
    ("context: BBR's whole restore sequence (validate + `tar -x` + shasum)", rall, rall_cpu),
])
rone = med("restore_one_pass")
p("| ratio | value | target | met |")
p("|---|---:|---:|---|")
p(f"| (`tar -x` + shasum) / bbr-agent restore send | {ratio(rbbr, rsend)} | >= 4x | {'yes' if rsend and rbbr / rsend >= 4 else 'NO'} |")
p(f"| one-pass pipeline / bbr-agent restore send | {ratio(rone, rsend)} | >= 1x | {'yes' if rsend and rone / rsend >= 1 else 'NO'} |")
p(f"| BBR's whole restore sequence / bbr-agent restore send | {ratio(rall, rsend)} | (context) | |")
p(f"| (`tar -x` + shasum) / bbr-agent copy line | {ratio(rbbr, med('agent_copy_line'))} | (context) | |")
p(f"| best runs: (`tar -x` + shasum) / bbr-agent restore send | {ratio(best(base_steps), best(['agent_restore']) - best(['agent_restore_empty']))} | (context) | |")
p(f"| CPU: (`tar -x` + shasum) / bbr-agent restore send | {ratio(rbbr_cpu, rsend_cpu)} | (context) | |")
p("")

# 3. Memory
p("### 3. Peak RSS (`/usr/bin/time -f %M`), target < 64 MiB\n")
p("| process | run | peak RSS | under 64 MiB |")
p("|---|---|---:|---|")
for line in open(rss_file):
    key, kib = line.split()
    who, what, label = key.split("-", 2)
    mib = int(kib) / 1024
    who = "driver (its whole process tree: an upper bound)" if who == "driver" else "agent (`serve`)"
    verdict = "yes" if mib < 64 else "NO"
    if what == "fleet":
        what, verdict = f"fleet backup, {label} VMs", verdict + " (context: not an artifact-size case)"
    else:
        what = f"{what}, {label} artifact"
    p(f"| {who} | {what} | {mib:.1f} MiB | {verdict} |")
if "mem_backup_4G" in wall:
    b, r = wall["mem_backup_4G"][1], wall["mem_restore_4G"][1]
    p(f"\nThe 4 GiB runs (one 4 GiB file; one run each, under `/usr/bin/time`): `deployment backup` {s(b)} "
      f"({4294.967296 / b:.0f} MB/s), `deployment restore` {s(r)} ({4294.967296 / r:.0f} MB/s).")
p("")

# 4. Fleet
p("### 4. Fleet: N VMs x 3 jobs of `exit 0` scripts (lock, backup, unlock), `--max-in-flight 50`\n")
p("| VMs | scripts | bbr-agent `deployment backup` | its CPU | the scripts in a shell loop | its CPU | loop / agent (wall) |")
p("|---:|---:|---:|---:|---:|---:|---:|")
for n in fleet.split():
    a, l = med(f"fleet_agent_{n}"), med(f"fleet_loop_{n}")
    p(f"| {n} | {int(n) * 9} | {s(a)} ({spread(f'fleet_agent_{n}')}) | {s(med(f'fleet_agent_{n}', cpu))} "
      f"| {s(l)} ({spread(f'fleet_loop_{n}')}) | {s(med(f'fleet_loop_{n}', cpu))} | {ratio(l, a)} |")
p("")
if any(wall.get(f"fleet_before_{n}") for n in fleet.split()):
    p("Before/after, alternating in the same runs (before = `BEFORE_AGENT`):\n")
    p("| VMs | before: wall | its CPU | after: wall | its CPU | before / after (wall) | (CPU) |")
    p("|---:|---:|---:|---:|---:|---:|---:|")
    for n in fleet.split():
        b, a = f"fleet_before_{n}", f"fleet_agent_{n}"
        p(f"| {n} | {s(med(b))} ({spread(b)}) | {s(med(b, cpu))} | {s(med(a))} ({spread(a)}) | {s(med(a, cpu))} "
          f"| {ratio(med(b), med(a))} | {ratio(med(b, cpu), med(a, cpu))} |")
    p("")

# 5. Start-up
lst = measured(wall, "startup_list")
p(f"### 5. Start-up: `bbr-agent list` over 200 jobs without metadata scripts ({len(lst)} runs)\n")
p("| command | median | min .. max |")
p("|---|---:|---:|")
p(f"| `bbr-agent --root <vm> list` | {s(med('startup_list'))} | {spread('startup_list')} |")
p(f"| context: `find <jobs>/ -path '*/bin/bbr/*' -type f` (BBR's discovery, without SSH) | {s(med('startup_find'))} | {spread('startup_find')} |")
print("\n".join(out))
PY

cat "$SUMMARY"
say "raw timings: $RESULTS; logs: $LOGS; table: $SUMMARY"
