#!/usr/bin/env bash
# Build the release binaries and run the benchmarks (JSON lines on stdout):
#   bash bench/run.sh [backfill|backfill_pg|catalogue|catalogue_pg|rate|latency|latency_100k|lag|lookback|reconcile|reconcile_lag|long_polls|delivery|queues|writes|window|rest|console|all]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tributary-target}"
cargo build --release --locked --quiet --bin tributary --example changelog_read --example delivery --example queues --example writes --example window --example rest --example console
if [ -z "${TRIBUTARY_TEST_PG:-}" ]; then
    bash scripts/ensure-postgres.sh
fi
which="${1:-all}"
# run one example benchmark when it is asked for (or all are): NAME ARG [services]
example() {
    if [ "$which" != "$1" ] && [ "$which" != all ]; then return; fi
    if [ "${3:-}" = services ]; then
        python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -r tests/clients/requirements.txt
        bash scripts/ensure-services.sh
    fi
    "$CARGO_TARGET_DIR/release/examples/$1" "$2"
    if [ "$which" = "$1" ]; then exit 0; fi
}
example delivery "${DELIVERY_CHANGES:-500000}" services
example queues "${QUEUE_CHANGES:-50000}"
WHENIWORK_API_KEY=bench WHENIWORK_EMAIL=bench@example.com WHENIWORK_PASSWORD=bench \
    example window "${SHIFTS:-50000}" services
REST_BENCH_TOKEN=bench example rest "${ISSUES:-100000}"
example writes "${WRITES:-1000}"
example console "${CONSOLE_SOURCES:-100}"
exec python3 bench/spine.py "$which" --bin "$CARGO_TARGET_DIR/release/tributary" \
    --reader "$CARGO_TARGET_DIR/release/examples/changelog_read"
