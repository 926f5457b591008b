#!/usr/bin/env bash
# The test command: installs what is missing (no release binary needed), then runs every test.
# Its last line is the test runner's summary.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --no-build
if cargo nextest --version >/dev/null 2>&1; then
  exec cargo nextest run --release --no-fail-fast --color never
else
  exec cargo test --release --no-fail-fast
fi
