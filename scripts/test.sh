#!/usr/bin/env bash
# The whole test suite, on a fresh machine: makes Postgres (127.0.0.1:5432;
# TRIBUTARY_TEST_PG names another server), Redis (6379), NATS JetStream
# (4222) and a Kafka-compatible broker (tansu, 19092, stopped afterwards)
# available, installs the Python and Node packages the tests run (the
# official Stripe libraries, a Standard Webhooks verifier, playwright-core)
# and Debian's chromium for the console's browser test, then runs every
# Rust test.
# Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tributary-target}"

if [ -z "${TRIBUTARY_TEST_PG:-}" ]; then
    bash scripts/ensure-postgres.sh
fi
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -r tests/clients/requirements.txt
# the official Stripe Node library and playwright-core, pinned by
# tests/clients/package-lock.json; the browser it drives is Debian's chromium
npm ci --prefix tests/clients --no-audit --no-fund --loglevel=error
bash scripts/ensure-browser.sh
# a pid file left by an earlier run names a broker this run did not start:
# forget it, so only a broker started now is stopped at the end
rm -f /tmp/tributary-tansu.pid
bash scripts/ensure-services.sh
# stop the Kafka broker the services script started, however the tests end
trap 'if [ -f /tmp/tributary-tansu.pid ]; then kill "$(cat /tmp/tributary-tansu.pid)" 2>/dev/null || true; rm -f /tmp/tributary-tansu.pid; fi' EXIT

cargo test --locked "$@"
