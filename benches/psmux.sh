#!/usr/bin/env bash
# Side-by-side throughput of psmux (this project) and stock mpegpsmux on the same H.264
# elementary stream, with `filesrc ! h264parse ! fakesink` as baseline for the parse cost.
#
#   benches/psmux.sh [frames] [loops] [runs]
#
# Encodes a 1280x720 H.264 stream once into benches/out/ (x264enc ultrafast, default
# 2 Mbit/s like a camera's main stream), concatenates it `loops` times into one byte-stream
# file, builds the plugin in release mode, then runs each pipeline `runs` times and keeps
# the best run: wall time is gst-launch's own "Execution ended after" (process start-up
# excluded), CPU time is user + sys of the whole process (less sensitive to other load on
# a shared machine). `psmux non-live-queue=0` shows the aggregator without deeper sink
# queues (upstream and the muxer thread then hand over one buffer at a time).
set -euo pipefail

FRAMES=${1:-1000}
LOOPS=${2:-10}
RUNS=${3:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT="$ROOT/benches/out"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
ES="$OUT/psmux-720p-$FRAMES.h264"
LOOPED="$OUT/psmux-720p-$FRAMES-x$LOOPS.h264"
mkdir -p "$OUT"

(cd "$ROOT" && cargo build --release -p gst-plugin-mpegps >&2)
export GST_PLUGIN_PATH="$TARGET/release${GST_PLUGIN_PATH:+:$GST_PLUGIN_PATH}"
gst-inspect-1.0 psmux >/dev/null || { echo "psmux not found in $TARGET/release" >&2; exit 1; }

if [ ! -s "$ES" ]; then
    echo "encoding $FRAMES frames 1280x720 to $ES" >&2
    gst-launch-1.0 -q videotestsrc num-buffers="$FRAMES" pattern=smpte horizontal-speed=4 \
        ! video/x-raw,format=I420,width=1280,height=720,framerate=30/1 \
        ! x264enc speed-preset=ultrafast key-int-max=60 \
        ! h264parse ! video/x-h264,stream-format=byte-stream,alignment=au \
        ! filesink location="$ES"
fi
if [ ! -s "$LOOPED" ]; then
    for _ in $(seq "$LOOPS"); do cat "$ES"; done >"$LOOPED"
fi
BYTES=$(stat -c %s "$LOOPED")
TOTAL_FRAMES=$(( FRAMES * LOOPS ))

# Best wall and CPU times in seconds of a launch line over $RUNS runs: "wall cpu".
best_time() {
    local best_wall="" best_cpu=""
    for _ in $(seq "$RUNS"); do
        local out wall cpu
        out=$( { TIMEFORMAT='CPU %U %S'; time gst-launch-1.0 $1; } 2>&1 ) \
            || { echo "failed: $1" >&2; echo "$out" >&2; exit 1; }
        # "Execution ended after 0:00:01.234567890"
        wall=$(echo "$out" | sed -n 's/.*Execution ended after \([0-9]*\):\([0-9]*\):\([0-9.]*\).*/\1*3600+\2*60+\3/p' | bc -l)
        cpu=$(echo "$out" | sed -n 's/^CPU \([0-9.]*\) \([0-9.]*\)$/\1+\2/p' | bc -l)
        if [ -z "$best_wall" ] || [ "$(echo "$wall < $best_wall" | bc -l)" = 1 ]; then best_wall=$wall; fi
        if [ -z "$best_cpu" ] || [ "$(echo "$cpu < $best_cpu" | bc -l)" = 1 ]; then best_cpu=$cpu; fi
    done
    echo "$best_wall $best_cpu"
}

SRC="filesrc location=$LOOPED ! h264parse"
read -r W_BASE C_BASE <<<"$(best_time "$SRC ! fakesink")"
read -r W_PSMUX C_PSMUX <<<"$(best_time "$SRC ! psmux ! fakesink")"
read -r W_PSMUX_Q C_PSMUX_Q <<<"$(best_time "$SRC ! psmux non-live-queue=0 ! fakesink")"
read -r W_MPEG C_MPEG <<<"$(best_time "$SRC ! mpegpsmux ! fakesink")"

report() {
    local name=$1 wall=$2 cpu=$3 base_wall=$4 base_cpu=$5
    printf "%-34s wall %6.3f s (%6.0f frames/s, %6.1f MB/s)  cpu %6.3f s  mux-only: wall %6.3f s cpu %6.3f s\n" \
        "$name" "$wall" "$(echo "$TOTAL_FRAMES / $wall" | bc -l)" "$(echo "$BYTES / $wall / 1000000" | bc -l)" \
        "$cpu" "$(echo "$wall - $base_wall" | bc -l)" "$(echo "$cpu - $base_cpu" | bc -l)"
}

echo "input: $FRAMES frames 1280x720 H.264 x $LOOPS = $TOTAL_FRAMES frames, $BYTES bytes ($((BYTES / TOTAL_FRAMES)) bytes/frame avg), best of $RUNS runs"
report "h264parse (baseline)" "$W_BASE" "$C_BASE" "$W_BASE" "$C_BASE"
report "h264parse ! psmux" "$W_PSMUX" "$C_PSMUX" "$W_BASE" "$C_BASE"
report "h264parse ! psmux non-live-queue=0" "$W_PSMUX_Q" "$C_PSMUX_Q" "$W_BASE" "$C_BASE"
report "h264parse ! mpegpsmux" "$W_MPEG" "$C_MPEG" "$W_BASE" "$C_BASE"
ratio() { echo "($1) / ($2)" | bc -l; }
for v in "psmux:$W_PSMUX:$C_PSMUX" "psmux non-live-queue=0:$W_PSMUX_Q:$C_PSMUX_Q"; do
    IFS=: read -r name w c <<<"$v"
    printf "throughput ratio %s / mpegpsmux: wall %.2fx, cpu %.2fx; mux-only (baseline subtracted): wall %.2fx, cpu %.2fx\n" \
        "$name" "$(ratio "$W_MPEG" "$w")" "$(ratio "$C_MPEG" "$c")" \
        "$(ratio "$W_MPEG - $W_BASE" "$w - $W_BASE")" "$(ratio "$C_MPEG - $C_BASE" "$c - $C_BASE")"
done

# The muxers alone, without h264parse in the timed path: the same access units, parsed
# once into memory, pushed through appsrc ! {nothing | psmux | mpegpsmux} ! fakesink, at
# three camera bitrates (1080p25: 2, 8 and 32 Mbit/s). psmux's cost per frame is flat
# (zero copy; with one sink pad in a non-live pipeline muxed in appsrc's thread, without the
# Aggregator thread hand-off); mpegpsmux copies the payload, so its cost grows with the
# frame size. The machine is shared: repeat the whole script and compare the ratios.
(cd "$ROOT" && cargo build --release -p gst-plugin-mpegps --example psmux_bench >&2)
for kbps in 2000 8000 32000; do
    es="$OUT/psmux-1080p-$kbps.h264"
    if [ ! -s "$es" ]; then
        gst-launch-1.0 -q videotestsrc num-buffers=250 pattern=smpte horizontal-speed=4 \
            ! video/x-raw,format=I420,width=1920,height=1080,framerate=25/1 \
            ! x264enc speed-preset=ultrafast key-int-max=50 bitrate="$kbps" \
            ! h264parse ! video/x-h264,stream-format=byte-stream,alignment=au ! filesink location="$es"
    fi
    echo "== in memory, 1080p25 at $kbps kbit/s"
    "$TARGET/release/examples/psmux_bench" "$es" 200 "$RUNS"
done
