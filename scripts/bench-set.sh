#!/usr/bin/env bash
# Benchmarks what a set adds to one server and rewrites the "## A set:
# queue and registry" section of docs/BENCHMARKS.md; other sections, and
# the section's own hand-written "### Reading them" part, are kept.
#
#   scripts/bench-set.sh [berth-bench set flags]
#     --quick   a smoke run of every phase; prints the section instead of
#               writing it, so unrepresentative numbers never land in the doc
#
# Starts its own throwaway PostgreSQL (scripts/pg.sh, but durable: fsync
# and synchronous_commit on, as a set would run it) and SeaweedFS
# (scripts/seaweed.sh), both on loopback, and measures:
#   - the async queue: one node on SQLite, one replica on PostgreSQL (local
#     and S3 blobs), three replicas on one database, against a bare
#     FOR UPDATE SKIP LOCKED loop on the same PostgreSQL;
#   - the registry: blob and docker push/pull with blobs in S3 against the
#     local filesystem.
# About five minutes after the build, using every core: run it on an
# otherwise idle machine.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

quick=
for arg in "$@"; do
  [ "$arg" = --quick ] && quick=1
done

. scripts/host.sh
ensure_host

cargo build --release --locked -p berth -p berth-bench >&2
built="$(scripts/build-agent.sh)"
agent="${built%%$'\n'*}"
scripts/build-test-images.sh >&2

# SeaweedFS stops taking writes once its disk has less than 1% free, and a
# full run stores about 3 GB on that disk: blobs and images on both
# registry servers and in SeaweedFS, which reclaims deleted space only
# later. Better to say so now than to fail halfway with a 503.
need_mb=3072
[ -n "$quick" ] && need_mb=512
read -r size_kb avail_kb < <(df -Pk "${TMPDIR:-/tmp}" | awk 'NR == 2 { print $2, $4 }')
if [ "$avail_kb" -lt $((size_kb / 100 + need_mb * 1024)) ]; then
  echo "bench: ${TMPDIR:-/tmp} has $((avail_kb / 1024)) MiB free; the run needs about" \
    "$need_mb MiB above SeaweedFS's 1% floor ($((size_kb / 100 / 1024)) MiB)" >&2
  exit 1
fi

section="$(mktemp)"
BENCH_PG_DIR=""
cleanup() {
  if [ -n "$BENCH_PG_DIR" ]; then
    pg_stop "$BENCH_PG_DIR" || true
    rm -rf "$BENCH_PG_DIR"
  fi
  rm -f "$section"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# pg_test_cluster's cluster, minus its fsync=off and synchronous_commit=off:
# a queue's commits are what is measured, so they cost what they would.
. scripts/pg.sh
pg_ensure_installed
BENCH_PG_DIR="$(mktemp -d /tmp/berth-pg.XXXXXX)"
chmod 755 "$BENCH_PG_DIR"
pg_port="$(pg_free_port)"
pg_init "$BENCH_PG_DIR"
pg_as "$(pg_bin)/pg_ctl" -D "$BENCH_PG_DIR/data" -l "$BENCH_PG_DIR/postgres.log" -w -t 60 \
  -o "-p $pg_port -k $BENCH_PG_DIR -c listen_addresses=127.0.0.1 -c max_connections=400" \
  start >/dev/null || { tail -n 20 "$BENCH_PG_DIR/postgres.log" >&2; exit 1; }
export BERTH_TEST_PG_URL
BERTH_TEST_PG_URL="$(pg_url "$pg_port")"
echo "bench: PostgreSQL on 127.0.0.1:$pg_port ($BENCH_PG_DIR)" >&2

# Chains its own stop onto the EXIT trap above.
. scripts/seaweed.sh
seaweed_start >&2

"$root/target/release/berth-bench" set \
  --berth "$root/target/release/berth" \
  --agent "$agent" \
  --pg-url "$BERTH_TEST_PG_URL" \
  --s3-url "$BERTH_TEST_S3_URL" \
  --revision "$(git describe --always --dirty 2>/dev/null || echo unknown)" \
  "$@" >"$section"

if [ -n "$quick" ]; then
  cat "$section"
  exit 0
fi

doc=docs/BENCHMARKS.md
if [ ! -f "$doc" ]; then
  printf '# Benchmarks\n\n' >"$doc"
fi

# The section runs from its heading to the next level-2 heading. What it
# held under "### Reading them" is kept after the new figures; a doc
# without the section gets it appended.
awk -v section="$section" '
  function flush() {
    sub(/\n+$/, "\n", kept)
    if (kept != "") printf "\n%s", kept
    kept = ""
  }
  BEGIN { while ((getline line < section) > 0) fresh = fresh line "\n" }
  /^## / && skipping { skipping = 0; keeping = 0; flush(); print "" }
  /^## A set: queue and registry[[:space:]]*$/ { printf "%s", fresh; skipping = 1; done = 1; next }
  skipping && /^### Reading them/ { keeping = 1 }
  skipping { if (keeping) kept = kept $0 "\n"; next }
  { print; last = $0 }
  END {
    if (skipping) flush()
    if (!done) printf "%s%s", (last == "" ? "" : "\n"), fresh
  }
' "$doc" >"$doc.tmp"
mv "$doc.tmp" "$doc"
echo "wrote $doc" >&2
