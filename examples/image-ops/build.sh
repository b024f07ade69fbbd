#!/usr/bin/env bash
# Builds the statically linked image-ops binary on the host and packages it in
# a FROM-scratch Docker image. The build happens outside Docker because image
# builds here have no network (nothing can be pulled or downloaded).
#
# Usage: examples/image-ops/build.sh [TAG]   (default: berth-example/image-ops:latest)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tag="${1:-berth-example/image-ops:latest}"
target=x86_64-unknown-linux-gnu

# An explicit --target keeps RUSTFLAGS away from build scripts and proc macros,
# which must stay dynamically linked to run on the host.
RUSTFLAGS='-C target-feature=+crt-static' cargo build --release \
    --manifest-path "$here/Cargo.toml" \
    --target "$target" \
    --target-dir "$here/target"

ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
cp "$here/Dockerfile" "$ctx/Dockerfile"
cp "$here/target/$target/release/image-ops" "$ctx/image-ops"

# The classic builder works on old (20.10) engines without buildx.
DOCKER_BUILDKIT=0 docker build -t "$tag" "$ctx"
