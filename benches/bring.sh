#!/usr/bin/env bash
# The cost of bringing the agent (issue 15): a 100-VM local fleet backed up three ways, runs
# alternating, on this machine:
#   plain      `bbr-agent --root VM serve`, no bootstrap (the run as before issue 15);
#   installed  `{{ agent }} --root VM serve` with an installed agent of this protocol: the
#              bootstrap's script and its `protocol-version` question, nothing sent;
#   brought    `{{ agent }} --root VM serve` with none installed: the release binary sent to
#              every VM, written, hashed and run.
# No ssh: the sessions are local processes, so this is the bootstrap's and the transfer's own
# cost (bytes through a pipe, written to disk, sha256sum), not a network's.
#
#   benches/bring.sh            100 VMs x 1 job, 3 measured runs of each after a warm-up
#   VMS=20 RUNS=1 benches/bring.sh
#
# Knobs: VMS, RUNS, MAX_IN_FLIGHT (default 50, as benches/run.sh), BENCH_DIR (default
# target/bench-bring), SKIP_BUILD=1 (use the release binary as built). Prints one table.
set -euo pipefail
umask 022
cd "$(dirname "$0")/.."
REPO=$PWD
export LC_ALL=C
VMS=${VMS:-100}
RUNS=${RUNS:-3}
MAX_IN_FLIGHT=${MAX_IN_FLIGHT:-50}
WORK=${BENCH_DIR:-$REPO/target/bench-bring}
say() { printf '== %s\n' "$*" >&2; }

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  say "cargo build --release"
  cargo build --release --locked >&2
fi
AGENT=$( (ls -t "$REPO"/target/*-*-*/release/bbr-agent "$REPO"/target/release/bbr-agent 2>/dev/null || true) | head -1)
[ -n "$AGENT" ] && [ -x "$AGENT" ] || { echo "benches/bring.sh: no release binary" >&2; exit 2; }
"$AGENT" protocol-version >/dev/null || { echo "benches/bring.sh: $AGENT predates issue 15" >&2; exit 2; }

rm -rf "$WORK"
mkdir -p "$WORK"
F=$WORK/fleet
say "a fleet of $VMS VMs x 1 job (lock, backup, unlock: exit 0)"
for ((i = 0; i < VMS; i++)); do
  vm=$F/vm-$i
  mkdir -p "$vm/var/vcap/instance" "$vm/var/vcap/data/tmp" "$vm/var/vcap/jobs/j/bin/bbr"
  echo acme > "$vm/var/vcap/instance/deployment"
  echo vm > "$vm/var/vcap/instance/name"
  for script in pre-backup-lock backup post-backup-unlock; do
    printf '#!/bin/sh\nexit 0\n' > "$vm/var/vcap/jobs/j/bin/bbr/$script"
    chmod 755 "$vm/var/vcap/jobs/j/bin/bbr/$script"
  done
done
inventory() { # name, command template with VM for the VM's root
  {
    echo "deployment: acme"
    echo "instances:"
    for ((i = 0; i < VMS; i++)); do
      printf -- "- group: vm\n  index: %d\n  command: '%s'\n" "$i" "${2//VM/$F/vm-$i}"
    done
  } > "$WORK/inv-$1.yml"
}
inventory plain "$AGENT --root VM serve"
inventory installed "BBR_AGENT_INSTALLED=$AGENT BBR_AGENT_TMP=VM/var/vcap/data/tmp {{ agent }} --root VM serve"
inventory brought "BBR_AGENT_INSTALLED=/nonexistent BBR_AGENT_TMP=VM/var/vcap/data/tmp {{ agent }} --root VM serve"

declare -A times
run() { # name, run number
  local art=$WORK/artifacts log=$WORK/$1-$2.log start end
  rm -rf "$art" && mkdir -p "$art"
  start=$(date +%s%N)
  "$AGENT" deployment --inventory "$WORK/inv-$1.yml" --max-in-flight "$MAX_IN_FLIGHT" backup \
    --artifact-path "$art" > "$log" 2>&1 || { cat "$log" >&2; exit 1; }
  end=$(date +%s%N)
  [ "$2" = 0 ] || times[$1]+="$(((end - start) / 1000000)) "
  if [ "$1" = brought ]; then
    local sent
    sent=$(grep -c ': agent brought (' "$log" || true)
    [ "$sent" = "$VMS" ] || { echo "benches/bring.sh: $sent of $VMS VMs brought" >&2; cat "$log" >&2; exit 1; }
  elif grep -q 'agent brought' "$log"; then
    echo "benches/bring.sh: $1 brought an agent" >&2; exit 1
  fi
  left=$(find "$F" -path '*/data/tmp/*' | head -1)
  [ -z "$left" ] || { echo "benches/bring.sh: left behind: $left" >&2; exit 1; }
}
say "1 warm-up + $RUNS runs of each, alternating"
for ((r = 0; r <= RUNS; r++)); do
  for name in plain installed brought; do run "$name" "$r"; done
done

median() { tr ' ' '\n' <<< "$1" | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
size=$(stat -c %s "$AGENT")
script=$(stat -c %s "$REPO/src/driver/bootstrap.sh")
p=$(median "${times[plain]}")
printf '| %s VMs, --max-in-flight %s | backup, median of %s (ms) | vs plain | bytes sent to the VMs beyond the protocol |\n|---|---:|---:|---:|\n' "$VMS" "$MAX_IN_FLIGHT" "$RUNS"
for name in plain installed brought; do
  m=$(median "${times[$name]}")
  case $name in
    plain) bytes=0 ;;
    installed) bytes=$((VMS * script)) ;;
    brought) bytes=$((VMS * (script + size + ${#size} + 1))) ;;
  esac
  printf '| %s | %s (runs: %s) | %+d ms | %s |\n' "$name" "$m" "${times[$name]% }" $((m - p)) "$bytes"
done
echo "agent: $AGENT, $size bytes; bootstrap script: $script bytes; $(nproc) CPUs"
