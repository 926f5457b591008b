#!/usr/bin/env bash
# The test command: installs what is missing (no release binary needed), then runs every test.
# Its last line is the test runner's summary.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --no-build
# formatting and lints first (rustfmt.toml, clippy.toml): a style or lint failure fails the tests
if cargo fmt --version >/dev/null 2>&1; then cargo fmt --check; else echo "note: rustfmt not installed; formatting not checked"; fi
if cargo clippy --version >/dev/null 2>&1; then
  cargo clippy --release --all-targets --quiet -- -D warnings
else
  echo "note: clippy not installed; lints not checked"
fi
if cargo nextest --version >/dev/null 2>&1; then
  exec cargo nextest run --release --no-fail-fast --color never
else
  exec cargo test --release --no-fail-fast
fi
