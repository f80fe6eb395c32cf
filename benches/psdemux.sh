#!/usr/bin/env bash
# psdemux vs mpegpsdemux vs ffmpeg on one large H.264 + AAC program stream.
#
#   benches/psdemux.sh [size-in-MB]     (default 400)
#
# Builds the plugin in release mode, generates benches/out/bench-<size>MB.ps once (x264enc
# ultrafast + AAC through mpegpsmux) and reuses it, then demuxes it to fakesink with each
# demuxer, printing throughput (bytes/s), the psdemux/mpegpsdemux ratio and peak RSS.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MB=${1:-400}
OUT=benches/out
mkdir -p "$OUT"
FILE="$OUT/bench-${SIZE_MB}MB.ps"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}

cargo build --release -p gst-plugin-mpegps >&2
export GST_PLUGIN_PATH="$CARGO_TARGET_DIR/release${GST_PLUGIN_PATH:+:$GST_PLUGIN_PATH}"
gst-inspect-1.0 psdemux >/dev/null

if [ ! -s "$FILE" ]; then
    # ~40 Mbit/s of 720p H.264: SIZE_MB MB take SIZE_MB/5 seconds of video.
    SECS=$(( SIZE_MB / 5 + 1 ))
    echo "generating $FILE (${SECS}s of 720p H.264 + AAC)..." >&2
    gst-launch-1.0 -q \
        videotestsrc num-buffers=$(( SECS * 25 )) pattern=snow \
        ! video/x-raw,width=1280,height=720,framerate=25/1 \
        ! x264enc speed-preset=ultrafast tune=zerolatency bitrate=40000 key-int-max=50 \
        ! mpegpsmux name=m ! filesink location="$FILE.tmp" \
        audiotestsrc num-buffers=$(( SECS * 48000 / 1024 )) samplesperbuffer=1024 \
        ! audio/x-raw,rate=48000,channels=2 ! voaacenc ! aacparse ! m.
    mv "$FILE.tmp" "$FILE"
fi
BYTES=$(stat -c %s "$FILE")
echo "file: $FILE ($BYTES bytes)"

# Runs a command RUNS times, prints "<best wall seconds> <peak RSS KiB>".
RUNS=${RUNS:-5}
measure() {
    local best="" rss=0 t0 t1 t r tmp
    tmp=$(mktemp)
    for _ in $(seq "$RUNS"); do
        t0=$(date +%s.%N)
        /usr/bin/time -f "%M" -o "$tmp" "$@" >/dev/null 2>&1
        t1=$(date +%s.%N)
        t=$(echo "$t1 - $t0" | bc -l)
        r=$(tail -n1 "$tmp")
        if [ -z "$best" ] || [ "$(echo "$t < $best" | bc -l)" = 1 ]; then best=$t; fi
        if [ "$r" -gt "$rss" ]; then rss=$r; fi
    done
    rm -f "$tmp"
    echo "$best $rss"
}

# Process start-up (plugin loading, pipeline set-up) is measured on the first MiB of the file
# and subtracted, so the figures are demuxing throughput.
HEAD="$OUT/bench-head-1MiB.ps"
head -c 1048576 "$FILE" >"$HEAD"
HEAD_BYTES=$(stat -c %s "$HEAD")

run_demux() {
    measure gst-launch-1.0 -q filesrc location="$2" ! "$1" name=d \
        d. ! fakesink sync=false async=false d. ! fakesink sync=false async=false
}

report() {
    local name=$1 secs=$2 rss=$3
    printf "%-12s %8.3f s  %9.2f MB/s  (%5.2f GB/s)  peak RSS %7.1f MiB\n" "$name" "$secs" \
        "$(echo "($BYTES - $HEAD_BYTES) / $secs / 1000000" | bc -l)" \
        "$(echo "($BYTES - $HEAD_BYTES) / $secs / 1000000000" | bc -l)" \
        "$(echo "$rss / 1024" | bc -l)"
}

net() { # full-file time, head time -> difference (at least 1 ms)
    local d
    d=$(echo "$1 - $2" | bc -l)
    if [ "$(echo "$d < 0.001" | bc -l)" = 1 ]; then d=0.001; fi
    echo "$d"
}

# Warm the page cache once.
cat "$FILE" >/dev/null
read -r PS_T PS_RSS < <(run_demux psdemux "$FILE")
read -r PS_H _ < <(run_demux psdemux "$HEAD")
read -r MP_T MP_RSS < <(run_demux mpegpsdemux "$FILE")
read -r MP_H _ < <(run_demux mpegpsdemux "$HEAD")
read -r FF_T FF_RSS < <(measure ffmpeg -v error -i "$FILE" -map 0 -c copy -f null -)
read -r FF_H _ < <(measure ffmpeg -v error -i "$HEAD" -map 0 -c copy -f null -)
PS_N=$(net "$PS_T" "$PS_H")
MP_N=$(net "$MP_T" "$MP_H")
FF_N=$(net "$FF_T" "$FF_H")
echo "best of $RUNS runs, start-up subtracted (wall: psdemux $PS_T s, mpegpsdemux $MP_T s, ffmpeg $FF_T s)"
report psdemux "$PS_N" "$PS_RSS"
report mpegpsdemux "$MP_N" "$MP_RSS"
report ffmpeg "$FF_N" "$FF_RSS"
printf "ratio psdemux/mpegpsdemux (bytes/s): %.2f\n" "$(echo "$MP_N / $PS_N" | bc -l)"
