#!/usr/bin/env bash
# Builds bbr-agent and backs up, wipes and restores the bundled example VM: no BOSH needed.
# The example VM is copied to target/demo/vm first, so the repository is never touched; the
# artifact is left in target/demo for you to look at.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== building bbr-agent (release; the first build takes about 3.5 minutes on 2 cores)" >&2
# Cargo's own progress (what it compiles, a bar on a terminal) shows the build is moving.
cargo build --release
# .cargo/config.toml names the host triple as the target (for a static build), so the
# binary is under target/<host triple>/release.
agent="target/$(rustc -vV | sed -n 's/^host: //p')/release/bbr-agent"
demo=target/demo
rm -rf "$demo" && mkdir -p "$demo"
cp -a examples/vm "$demo/vm"
run() { echo; echo "\$ bbr-agent $*"; "$agent" --root "$demo/vm" "$@"; }

run list
run plan backup
run backup --artifact-path "$demo"
artifact=$(ls -d "$demo"/acme_*)

echo; echo "== the artifact: $artifact"; ls -l "$artifact"; cat "$artifact/metadata"

echo; echo "== wiping acme-db's data"
rm -rf "$demo/vm/var/vcap/store/acme-db/data"
run restore --artifact-path "$artifact"

echo
diff -r examples/vm/var/vcap/store/acme-db/data "$demo/vm/var/vcap/store/acme-db/data"
echo "The restored data is byte-identical to the original."
