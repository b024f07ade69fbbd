#!/usr/bin/env bash
# Benchmarks a real berth server on this machine and rewrites the
# "## Warm path" section of docs/BENCHMARKS.md with the results; other
# sections of that file are kept as they are. Takes several minutes and
# uses every core: run it on an otherwise idle machine.
#
# Usage: scripts/bench.sh [berth-bench flags]
#   --quick   a smoke run of every phase; prints the section instead of
#             writing it, so unrepresentative numbers never land in the doc
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

quick=
for arg in "$@"; do
  [ "$arg" = --quick ] && quick=1
done

cargo build --release --locked -p berth -p berth-bench >&2
built="$(scripts/build-agent.sh --with-echo)"
agent="${built%%$'\n'*}"
scripts/build-test-images.sh >&2
image_ops="$root/examples/image-ops/target/x86_64-unknown-linux-gnu/release/image-ops"

section="$(mktemp)"
trap 'rm -f "$section"' EXIT
"$root/target/release/berth-bench" \
  --berth "$root/target/release/berth" \
  --agent "$agent" \
  --image-ops "$image_ops" \
  --revision "$(git describe --always --dirty 2>/dev/null || echo unknown)" \
  "$@" >"$section"

if [ -n "$quick" ]; then
  cat "$section"
  exit 0
fi

doc=docs/BENCHMARKS.md
if [ ! -f "$doc" ]; then
  cat >"$doc" <<'INTRO'
# Benchmarks

Measured, not estimated: every figure comes from a real `berth server` on
the machine its section names, set against a baseline measured in the same
run with the same client. `scripts/bench.sh` regenerates the "Warm path"
section (several minutes on an idle machine); the other sections are kept.

INTRO
fi

# The section runs from its heading to the next level-2 heading; a doc
# without one gets it appended.
awk -v section="$section" '
  BEGIN { while ((getline line < section) > 0) fresh = fresh line "\n" }
  /^## / && skipping { skipping = 0; print "" }
  /^## Warm path[[:space:]]*$/ { printf "%s", fresh; skipping = 1; done = 1; next }
  !skipping { print; last = $0 }
  END { if (!done) printf "%s%s", (last == "" ? "" : "\n"), fresh }
' "$doc" >"$doc.tmp"
mv "$doc.tmp" "$doc"
echo "wrote $doc" >&2
