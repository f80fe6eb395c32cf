#!/usr/bin/env bash
# `make test`'s meson check: a meson build and install produce plugins GStreamer loads,
# with every element of the project registered.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
build=$root/target/meson-check
stage=$root/target/meson-stage
rm -rf "$build" "$stage"
meson setup "$build" --buildtype=release -Dplugindir=/usr/lib/gst-ipcam-check >/dev/null
meson compile -C "$build"
DESTDIR="$stage" meson install -C "$build" >/dev/null

elements=(psdemux psmux rtppspay rtppsdepay rtspinterleavedparse rtcpstats gb28181src gb28181sink)
fail=0
for dir in "$build" "$stage/usr/lib/gst-ipcam-check"; do
    registry=$(mktemp --suffix=.bin)
    for e in "${elements[@]}"; do
        # Captured first: `grep -q` would close the pipe early and, with pipefail, turn
        # gst-inspect's SIGPIPE into a failure.
        info=$(GST_REGISTRY="$registry" GST_PLUGIN_PATH="$dir" GST_PLUGIN_SYSTEM_PATH=/nonexistent \
            gst-inspect-1.0 "$e" 2>/dev/null || true)
        if [[ $info == *"Factory Details"* ]]; then
            echo "meson-check: $e loads from $dir"
        else
            echo "meson-check: FAILED: $e does not load from $dir"; fail=1
        fi
    done
    rm -f "$registry"
done
if [ $fail = 0 ]; then echo "meson-check: 1 passed, 0 failed"; else echo "meson-check: 0 passed, 1 failed"; exit 1; fi
