#!/usr/bin/env bash
# Benchmarks what running calls on executor nodes costs and rewrites the
# "## Executor nodes: the remote hop" section of docs/BENCHMARKS.md; other
# sections, and the section's own hand-written "### Reading them" part,
# are kept.
#
#   scripts/bench-fleet.sh [berth-bench fleet flags]
#     --quick   a smoke run of every phase; prints the section instead of
#               writing it, so unrepresentative numbers never land in the doc
#
# Starts its own throwaway PostgreSQL (scripts/pg.sh, but durable: fsync
# and synchronous_commit on, as a set would run it) on loopback, and
# measures:
#   - warm sync calls through a replica and a `berth executor` node against
#     the all-in-one server and against the same replica running its
#     containers itself;
#   - the throughput of two replicas against one, over the same two nodes.
# A few minutes after the build, using every core: run it on an otherwise
# idle machine.
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
# whatever a call commits costs what it would in a set.
. scripts/pg.sh
pg_ensure_installed
BENCH_PG_DIR="$(mktemp -d /tmp/berth-pg.XXXXXX)"
chmod 755 "$BENCH_PG_DIR"
pg_port="$(pg_free_port)"
pg_init "$BENCH_PG_DIR"
pg_as "$(pg_bin)/pg_ctl" -D "$BENCH_PG_DIR/data" -l "$BENCH_PG_DIR/postgres.log" -w -t 60 \
  -o "-p $pg_port -k $BENCH_PG_DIR -c listen_addresses=127.0.0.1 -c max_connections=400" \
  start >/dev/null || { tail -n 20 "$BENCH_PG_DIR/postgres.log" >&2; exit 1; }
pg_admin_url="$(pg_url "$pg_port")"
echo "bench: PostgreSQL on 127.0.0.1:$pg_port ($BENCH_PG_DIR)" >&2

"$root/target/release/berth-bench" fleet \
  --berth "$root/target/release/berth" \
  --agent "$agent" \
  --pg-url "$pg_admin_url" \
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
  /^## Executor nodes: the remote hop[[:space:]]*$/ { printf "%s", fresh; skipping = 1; done = 1; next }
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
