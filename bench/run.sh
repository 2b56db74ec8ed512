#!/usr/bin/env bash
# Build the release binaries and run the benchmarks (JSON lines on stdout):
#   bash bench/run.sh [backfill|backfill_pg|rate|lag|delivery|queues|writes|window|all]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tributary-target}"
cargo build --release --locked --quiet --bin tributary --example changelog_read --example delivery --example queues --example writes --example window
if [ -z "${TRIBUTARY_TEST_PG:-}" ]; then
    bash scripts/ensure-postgres.sh
fi
if [ "${1:-all}" = delivery ] || [ "${1:-all}" = all ]; then
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -r tests/clients/requirements.txt
    bash scripts/ensure-services.sh
    "$CARGO_TARGET_DIR/release/examples/delivery" "${DELIVERY_CHANGES:-500000}"
    [ "${1:-all}" = delivery ] && exit 0
fi
if [ "${1:-all}" = queues ] || [ "${1:-all}" = all ]; then
    "$CARGO_TARGET_DIR/release/examples/queues" "${QUEUE_CHANGES:-50000}"
    [ "${1:-all}" = queues ] && exit 0
fi
if [ "${1:-all}" = window ] || [ "${1:-all}" = all ]; then
    bash scripts/ensure-services.sh
    "$CARGO_TARGET_DIR/release/examples/window" "${SHIFTS:-50000}"
    [ "${1:-all}" = window ] && exit 0
fi
if [ "${1:-all}" = writes ] || [ "${1:-all}" = all ]; then
    "$CARGO_TARGET_DIR/release/examples/writes" "${WRITES:-1000}"
    [ "${1:-all}" = writes ] && exit 0
fi
exec python3 bench/spine.py "${1:-all}" --bin "$CARGO_TARGET_DIR/release/tributary" \
    --reader "$CARGO_TARGET_DIR/release/examples/changelog_read"
