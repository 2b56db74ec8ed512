#!/usr/bin/env bash
# Build the release binary and run the spine benchmarks (JSON lines on stdout).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tributary-target}"
cargo build --release --locked --quiet --bin tributary --example changelog_read
if [ -z "${TRIBUTARY_TEST_PG:-}" ]; then
    bash scripts/ensure-postgres.sh
fi
exec python3 bench/spine.py "${1:-all}" --bin "$CARGO_TARGET_DIR/release/tributary" \
    --reader "$CARGO_TARGET_DIR/release/examples/changelog_read"
