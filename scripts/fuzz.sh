#!/usr/bin/env bash
# Runs each fuzz target for a bounded time (default 60 s each): no panic, no hang.
#   scripts/fuzz.sh [SECONDS]
# cargo-fuzz needs nightly features; with the stable toolchain they are enabled through
# RUSTC_BOOTSTRAP=1 (the only toolchain this project's machines can have).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SECS=${1:-60}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
cd "$ROOT"
for target in port_spec config; do
  echo "== fuzzing $target for ${SECS}s"
  mkdir -p "fuzz/corpus/$target"
  RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" "fuzz/corpus/$target" -- \
    -max_total_time="$SECS" -timeout=5 -rss_limit_mb=2048 -print_final_stats=1 2>&1 | tail -6
done
echo "fuzzing: no crash, no hang"
