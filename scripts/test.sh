#!/usr/bin/env bash
# The whole test suite, on a fresh machine: makes Postgres available on
# 127.0.0.1:5432 (TRIBUTARY_TEST_PG names another server), installs the
# official Stripe Python library (used to check the simulator), then runs
# every Rust test. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tributary-target}"

if [ -z "${TRIBUTARY_TEST_PG:-}" ]; then
    bash scripts/ensure-postgres.sh
fi
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -r tests/clients/requirements.txt

cargo test --locked "$@"
