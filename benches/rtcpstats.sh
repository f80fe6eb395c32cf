#!/bin/sh
# Per-packet cost of rtcpstats versus identity (goal: < 100 ns/packet more than identity).
# Usage: benches/rtcpstats.sh [packets]   (default 5000000)
set -eu
cd "$(dirname "$0")/.."
cargo build --release -p gst-plugin-rtcpstats --example rtcpstats_bench
"${CARGO_TARGET_DIR:-target}/release/examples/rtcpstats_bench" "${1:-5000000}"
