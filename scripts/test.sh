#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine: prepares the host (Docker
# Engine, busybox, headless Chromium for the console's test), builds every
# test image from local static binaries, then runs lints, unit tests and the
# end-to-end tests against the real engine
# (with a throwaway loopback SeaweedFS for the blob store's S3 backend), and
# last checks a live server against its OpenAPI document (schemathesis,
# scripts/api-conformance.sh).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
. scripts/host.sh
ensure_host
ensure_browser # headless Chromium and chromedriver for the console's test
. scripts/pg.sh && pg_test_cluster # a throwaway PostgreSQL for the store's suite (BERTH_TEST_PG_URL)

echo "== test images"
scripts/build-test-images.sh

echo "== lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
(cd examples/image-ops && cargo fmt --check && cargo clippy --all-targets --locked -- -D warnings)

echo "== example unit tests"
(cd examples/image-ops && cargo test --locked --quiet)

echo "== blob stores (SeaweedFS for berth-blobs' S3 backend; strace watches its local fsyncs)"
if ! command -v strace >/dev/null 2>&1; then
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq strace >/dev/null
fi
. scripts/seaweed.sh
seaweed_start

echo "== workspace tests (unit and end-to-end against the real engine)"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
seaweed_stop

echo "== API conformance (schemathesis over every operation of /openapi.json)"
scripts/api-conformance.sh
