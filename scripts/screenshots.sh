#!/usr/bin/env bash
# Regenerate the console's pictures in the README (docs/console-overview.png,
# docs/console-sink.png): the browser test run with live traffic and a
# minute of chart points, its overview and sink page kept.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tributary-target}"
bash scripts/ensure-browser.sh
npm ci --prefix tests/clients --no-audit --no-fund --loglevel=error
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -r tests/clients/requirements.txt
mkdir -p docs
CONSOLE_README=1 TRIBUTARY_SCREENSHOTS_DIR="$PWD/docs" cargo test --locked --test console
ls -l docs/console-*.png
