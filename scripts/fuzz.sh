#!/usr/bin/env bash
# Runs every fuzz target (or those named) for N seconds each, one after the
# other, and prints libFuzzer's final stats line of each. Inputs the fuzzer
# grows go to a scratch directory, never into fuzz/corpus/.
#
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]   (default: 600, all targets)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root/fuzz"

seconds="${1:-600}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(image_reference repository_name digest manifest api_bodies)
fi

# cargo-fuzz needs nightly compiler flags; the stable toolchain allows them
# this way.
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
failed=0
for target in "${targets[@]}"; do
  mkdir -p "$scratch/$target"
  log="$scratch/$target.log"
  echo "== $target (${seconds}s)"
  status=0
  cargo fuzz run "$target" "$scratch/$target" "corpus/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 \
    >"$log" 2>&1 || status=$?
  # The last status line ("#N DONE cov: .. ft: .. exec/s ..") and the totals.
  grep -E '^#[0-9]+[[:space:]]+(DONE|pulse|NEW|REDUCE)' "$log" | tail -n 1 || true
  grep -E '^stat::(number_of_executed_units|peak_rss_mb):' "$log" || true
  if [ "$status" -ne 0 ]; then
    failed=1
    echo "$target FAILED (exit $status); the input is under fuzz/artifacts/$target/:"
    grep -E 'panicked at|^(SUMMARY|==[0-9]+==ERROR)' -A1 "$log" | head -n 6 || true
  fi
done
exit "$failed"
