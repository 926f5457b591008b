#!/usr/bin/env bash
# The main job: installs what is missing, builds, pre-trains SVIB on Fashion-MNIST with the
# fmnist-cpu preset (resuming if runs/fmnist-cpu holds an unfinished run) and prints kNN-20.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec target/release/svib train --config fmnist-cpu --out "${1:-runs/fmnist-cpu}"
