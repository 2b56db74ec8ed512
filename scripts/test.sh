#!/usr/bin/env bash
# The whole test suite, on a fresh machine: makes Postgres (127.0.0.1:5432;
# TRIBUTARY_TEST_PG names another server), Redis (6379) and NATS JetStream
# (4222) available, installs the Python packages the tests run (the official
# Stripe library, a Standard Webhooks verifier), then runs every Rust test.
# Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tributary-target}"

if [ -z "${TRIBUTARY_TEST_PG:-}" ]; then
    bash scripts/ensure-postgres.sh
fi
bash scripts/ensure-services.sh
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -r tests/clients/requirements.txt

cargo test --locked "$@"
