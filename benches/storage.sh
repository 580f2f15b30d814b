#!/usr/bin/env bash
# The storage benchmark (issue 16): a deployment backup straight into object storage against
# the AWS CLI's streaming upload of the same tar, into the same Garage, in one run; and zstd's
# ratio and speed on random data and on a text-heavy SQL dump. See docs/benchmarks.md.
#
#   benches/storage.sh            512 MiB data set, 3 measured runs after a warm-up
#   QUICK=1 benches/storage.sh    64 MiB, 2 runs
#
# Needs: garage (scripts/test-deps installs it), the AWS CLI (`pip install awscli`, installed
# here when missing), openssl, python3. Knobs: RUNS, BENCH_DIR (default target/bench-storage),
# SKIP_BUILD=1.
set -euo pipefail
umask 022
cd "$(dirname "$0")/.."
REPO=$PWD
export LC_ALL=C
QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then RUNS=${RUNS:-2}; SCALE=8; else RUNS=${RUNS:-3}; SCALE=1; fi
WORK=${BENCH_DIR:-$REPO/target/bench-storage}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
LOGS=$WORK/logs
mkdir -p "$LOGS"
RESULTS=$WORK/results.md
say() { printf '== %s\n' "$*" >&2; }
now() { date +%s%N; }

# --- tools -----------------------------------------------------------------------------------
PATH=$PATH:$HOME/.cache/garage/bin:$HOME/.local/bin
command -v garage > /dev/null || { echo "benches/storage.sh: no garage: run scripts/test-deps first" >&2; exit 1; }
command -v aws > /dev/null || { say "installing the AWS CLI (pip install awscli)"; python3 -m pip install -q awscli >&2; }
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  say "building bbr-agent (release)"
  cargo build --release --locked -q
fi
AGENT=$REPO/target/$(rustc -vV | sed -n 's/^host: //p')/release/bbr-agent

# --- a single-node Garage in the work dir --------------------------------------------------
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
G=$WORK/garage
rm -rf "$G"
mkdir -p "$G"
S3_PORT=$(free_port)
RPC_PORT=$(free_port)
cat > "$G/garage.toml" << EOF
metadata_dir = "$G/meta"
data_dir = "$G/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$RPC_PORT"
rpc_public_addr = "127.0.0.1:$RPC_PORT"
rpc_secret = "$(openssl rand -hex 32)"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$S3_PORT"
root_domain = ".s3.garage.localhost"
EOF
export GARAGE_DEFAULT_ACCESS_KEY=GK$(openssl rand -hex 12)
export GARAGE_DEFAULT_SECRET_KEY=$(openssl rand -hex 32)
export GARAGE_DEFAULT_BUCKET=bench
garage -c "$G/garage.toml" server --single-node --default-bucket > "$LOGS/garage.log" 2>&1 &
GARAGE_PID=$!
trap 'kill $GARAGE_PID 2> /dev/null || true' EXIT
export AWS_ACCESS_KEY_ID=$GARAGE_DEFAULT_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$GARAGE_DEFAULT_SECRET_KEY
export AWS_REGION=garage AWS_ENDPOINT_URL=http://127.0.0.1:$S3_PORT
unset AWS_PROFILE AWS_DEFAULT_PROFILE
for ((i = 0; i < 100; i++)); do
  aws s3 ls s3://bench > /dev/null 2>&1 && break
  sleep 0.2
done

# --- the data sets: random (BBR's benchmark shape) and a SQL dump ------------------------
mb=$((1024 * 1024))
RANDOM_DATA=$WORK/data-random
if [ ! -f "$RANDOM_DATA.done" ]; then
  say "making the random data set ($((512 / SCALE)) MiB)"
  rm -rf "$RANDOM_DATA"
  mkdir -p "$RANDOM_DATA/small" "$RANDOM_DATA/medium"
  head -c $((256 * mb / SCALE)) /dev/urandom > "$RANDOM_DATA/large.bin"
  for ((i = 0; i < 32; i++)); do head -c $((4 * mb / SCALE)) /dev/urandom > "$RANDOM_DATA/medium/$i.bin"; done
  for ((i = 0; i < 2048; i++)); do head -c $((64 * 1024 / SCALE)) /dev/urandom > "$RANDOM_DATA/small/$i.bin"; done
  touch "$RANDOM_DATA.done"
fi
SQL_DATA=$WORK/data-sql
if [ ! -f "$SQL_DATA.done" ]; then
  say "making the SQL dump data set ($((256 / SCALE)) MiB)"
  rm -rf "$SQL_DATA"
  mkdir -p "$SQL_DATA"
  python3 - "$SQL_DATA/dump.sql" $((256 * mb / SCALE)) << 'EOF'
import random, sys
random.seed(7)
words = ["alpha", "bravo", "cloud", "foundry", "diego", "cell", "router", "uaa", "credhub",
         "postgres", "backup", "restore", "lock", "unlock", "artifact", "blobstore", "droplet",
         "buildpack", "space", "org", "route", "service", "binding", "instance", "app"]
out = open(sys.argv[1], "w")
target = int(sys.argv[2])
out.write("-- PostgreSQL database dump\nSET statement_timeout = 0;\n")
out.write("CREATE TABLE public.apps (id integer, guid text, name text, state text, memory integer, created_at timestamp, description text);\n")
out.write("COPY public.apps (id, guid, name, state, memory, created_at, description) FROM stdin;\n")
i = 0
while out.tell() < target:
    i += 1
    guid = "%08x-%04x-%04x-%04x-%012x" % tuple(random.getrandbits(b) for b in (32, 16, 16, 16, 48))
    name = "-".join(random.choice(words) for _ in range(2)) + str(random.randint(1, 999))
    desc = " ".join(random.choice(words) for _ in range(random.randint(3, 12)))
    out.write("%d\t%s\t%s\t%s\t%d\t2026-%02d-%02d %02d:%02d:%02d\t%s\n" % (
        i, guid, name, random.choice(["STARTED", "STOPPED"]), random.choice([256, 512, 1024, 2048]),
        random.randint(1, 12), random.randint(1, 28), random.randint(0, 23), random.randint(0, 59),
        random.randint(0, 59), desc))
out.write("\\.\n")
EOF
  touch "$SQL_DATA.done"
fi

# A VM whose backup script hard-links a data set into its artifact directory.
make_vm() {
  local vm=$1 src=$2 bbr=$1/var/vcap/jobs/bench/bin/bbr
  rm -rf "$vm"
  mkdir -p "$bbr" "$vm/var/vcap/instance" "$vm/var/vcap/store"
  cp -al "$src" "$vm/var/vcap/store/bench-src"
  echo acme > "$vm/var/vcap/instance/deployment"
  echo bench > "$vm/var/vcap/instance/name"
  printf '#!/bin/sh\nexec cp -al "$(dirname "$0")/../../../../store/bench-src/." "$BBR_ARTIFACT_DIRECTORY"\n' > "$bbr/backup"
  printf '#!/bin/sh\nexit 0\n' > "$bbr/restore"
  chmod 755 "$bbr/backup" "$bbr/restore"
}
inventory() {
  printf "deployment: acme\ninstances:\n- group: bench\n  index: 0\n  command: '%s --root %s serve'\n" "$AGENT" "$2" > "$1"
}
make_vm "$WORK/vm-random" "$RANDOM_DATA"
make_vm "$WORK/vm-sql" "$SQL_DATA"
inventory "$WORK/inv-random.yml" "$WORK/vm-random"
inventory "$WORK/inv-sql.yml" "$WORK/vm-sql"

# --- timing ----------------------------------------------------------------------------------
declare -A WALL RSS
# timed NAME CMD...: wall ns and peak RSS (KiB, the largest process of the tree) of one run.
timed() {
  local name=$1; shift
  local s e log=$LOGS/$name.$RUN
  s=$(now)
  if ! /usr/bin/time -f '%M' -o "$log.rss" "$@" > "$log" 2>&1; then
    echo "benches/storage.sh: '$name' failed (run $RUN):" >&2
    cat "$log" >&2
    exit 1
  fi
  e=$(now)
  [ "$RUN" = 0 ] && return 0
  WALL[$name]="${WALL[$name]:-} $((e - s))"
  RSS[$name]="${RSS[$name]:-} $(tail -1 "$log.rss")"
}
median() { tr ' ' '\n' | grep . | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
max() { tr ' ' '\n' | grep . | sort -n | tail -1; }

# The tar the AWS CLI uploads: the job's own tar from a local backup by bbr-agent.
rm -rf "$WORK/local"
mkdir -p "$WORK/local"
"$AGENT" deployment --inventory "$WORK/inv-random.yml" backup --artifact-path "$WORK/local" > "$LOGS/local.log" 2>&1
TAR=$(find "$WORK/local" -name '*.tar' | head -1)
TAR_BYTES=$(stat -c %s "$TAR")

say "to Garage: bbr-agent backup to s3:// and aws s3 cp - of the same tar, 1 warm-up + $RUNS runs, alternating"
for ((RUN = 0; RUN <= RUNS; RUN++)); do
  sync
  timed agent_s3 "$AGENT" deployment --inventory "$WORK/inv-random.yml" backup --artifact-path "s3://bench/agent-$RUN"
  sync
  timed awscli sh -c "aws s3 cp - s3://bench/awscli-$RUN/bench.tar < '$TAR'"
  sync
  rm -rf "$WORK/local-$RUN" && mkdir -p "$WORK/local-$RUN"
  timed agent_local "$AGENT" deployment --inventory "$WORK/inv-random.yml" backup --artifact-path "$WORK/local-$RUN"
  rm -rf "$WORK/local-$RUN"
done

say "zstd on the VM: random and SQL dump, levels 3 and 9 (19 is under 1 MiB/s: see docs/behaviour.md)"
declare -A RATIO
for set in random sql; do
  for level in 3 9; do
    for ((RUN = 0; RUN <= RUNS; RUN++)); do
      rm -rf "$WORK/z" && mkdir -p "$WORK/z"
      timed "zstd${level}_$set" "$AGENT" deployment --inventory "$WORK/inv-$set.yml" backup --compress "zstd:$level" --artifact-path "$WORK/z"
    done
    z=$(find "$WORK/z" -name '*.tar.zst' -printf '%s\n' | head -1)
    rm -rf "$WORK/p" && mkdir -p "$WORK/p"
    "$AGENT" deployment --inventory "$WORK/inv-$set.yml" backup --artifact-path "$WORK/p" > /dev/null 2>&1
    p=$(find "$WORK/p" -name '*.tar' -printf '%s\n' | head -1)
    RATIO[zstd${level}_$set]=$(awk -v p="$p" -v z="$z" 'BEGIN { printf "%.2f (%d -> %d bytes)", p / z, p, z }')
  done
  rm -rf "$WORK/plain" && mkdir -p "$WORK/plain"
  for ((RUN = 0; RUN <= RUNS; RUN++)); do
    rm -rf "$WORK/plain" && mkdir -p "$WORK/plain"
    timed "plain_$set" "$AGENT" deployment --inventory "$WORK/inv-$set.yml" backup --artifact-path "$WORK/plain"
  done
done

# --- the table -------------------------------------------------------------------------------
{
  echo "# Storage benchmark, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
  echo "Data: $((TAR_BYTES / mb)) MiB tar (random); medians of $RUNS runs after a warm-up."
  echo
  echo "| Contender | Median wall | MiB/s | Peak RSS (max) |"
  echo "|---|---|---|---|"
  for name in agent_s3 awscli agent_local; do
    w=$(echo "${WALL[$name]}" | median)
    r=$(echo "${RSS[$name]}" | max)
    awk -v n="$name" -v w="$w" -v b="$TAR_BYTES" -v r="$r" 'BEGIN { printf "| %s | %.2f s | %.0f | %.1f MiB |\n", n, w / 1e9, b / 1048576 / (w / 1e9), r / 1024 }'
  done
  a=$(echo "${WALL[agent_s3]}" | median)
  c=$(echo "${WALL[awscli]}" | median)
  awk -v a="$a" -v c="$c" 'BEGIN { printf "\nbbr-agent to s3:// takes %.2fx the AWS CLI'"'"'s time for the same bytes.\n", a / c }'
  echo
  echo "| Data set | Level | Ratio (tar -> tar.zst) | Median wall | Plain backup wall |"
  echo "|---|---|---|---|---|"
  for set in random sql; do
    for level in 3 9; do
      w=$(echo "${WALL[zstd${level}_$set]}" | median)
      pw=$(echo "${WALL[plain_$set]}" | median)
      awk -v s="$set" -v l="$level" -v r="${RATIO[zstd${level}_$set]}" -v w="$w" -v pw="$pw" 'BEGIN { printf "| %s | %s | %s | %.2f s | %.2f s |\n", s, l, r, w / 1e9, pw / 1e9 }'
    done
  done
} | tee "$RESULTS"
