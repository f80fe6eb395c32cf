#!/usr/bin/env bash
# The gateway side by side with ZLMediaKit, the most used GB28181 media server, in one run on
# this machine: N PS/RTP camera streams (camera-sim, the same pre-encoded H.264 + G.711 clip at
# the same bitrate) ingested over UDP, each read by one RTSP client over TCP (the same
# gst-launch client). Per system: its process CPU per stream; then the ratio.
#
#   ZLM_BIN=/path/to/MediaServer benches/zlm.sh [streams] [kbps] [seconds]
#
# ZLMediaKit is NOT part of this project and never built by it: build it yourself from
# https://github.com/ZLMediaKit/ZLMediaKit (Release) and pass the MediaServer binary. Its side:
# `openRtpServer` (port=0, tcp_mode=0, one stream_id per camera) through its HTTP API, camera-sim
# `--rtp-to` sends PS/RTP to the returned ports (no SIP: that is wvp's job in a ZLMediaKit
# deployment), readers play rtsp://127.0.0.1:PORT/rtp/<stream_id>. Its configuration (written to
# a temporary config.ini): every other output off (HLS, RTMP, TS, fMP4, MP4, WebRTC, SRT,
# hooks), as the gateway runs here with RTSP only. Everything listens on loopback.
# The gateway's side is benches/gateway.sh with the same streams, bitrate and duration.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-20}
kbps=${2:-2000}
secs=${3:-30}
: "${ZLM_BIN:?set ZLM_BIN to a ZLMediaKit MediaServer binary (see the header of this script)}"
[ -x "$ZLM_BIN" ] || { echo "ZLM_BIN=$ZLM_BIN is not an executable" >&2; exit 1; }
target=${CARGO_TARGET_DIR:-$PWD/target}
cargo build -q --release -p gst-ipcam-examples --examples -p gst-ipcam-gateway --bins
export GW_SIM_PATTERN=${GW_SIM_PATTERN:-snow}
size=${GW_BENCH_SIZE:-640x360}
hz=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }

work=$(mktemp -d "${TMPDIR:-/tmp}/zlm-bench-XXXXXX")
base=$((20000 + RANDOM % 20000))
http=$base rtsp=$((base + 1))
secret=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
cat >"$work/config.ini" <<EOF
[api]
secret=$secret
apiDebug=0
[general]
listen_ip=127.0.0.1
enableVhost=0
[hook]
enable=0
[protocol]
enable_hls=0
enable_hls_fmp4=0
enable_mp4=0
enable_rtsp=1
enable_rtmp=0
enable_ts=0
enable_fmp4=0
[http]
port=$http
sslport=0
[rtsp]
port=$rtsp
sslport=0
[rtmp]
port=0
sslport=0
[rtc]
port=0
[srt]
port=0
[shell]
port=0
[rtp_proxy]
port=0
port_range=$((base + 100))-$((base + 100 + 4 * n + 100))
EOF
cleanup() {
    for p in ${clients:-} ${cams:-} ${zlm:-}; do kill -INT "$p" 2>/dev/null || true; done
    for _ in $(seq 1 50); do
        alive=""
        for p in ${clients:-} ${cams:-} ${zlm:-}; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ -z "$alive" ] && break
        sleep 0.2
    done
    for p in ${clients:-} ${cams:-} ${zlm:-}; do kill -KILL "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
api() { curl -fs "http://127.0.0.1:$http/index/api/$1?secret=$secret${2:+&$2}"; }
json() { /usr/bin/python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

"$ZLM_BIN" -c "$work/config.ini" -l 3 --log-dir "$work/log/" >"$work/zlm.log" 2>&1 &
zlm=$!
for _ in $(seq 1 100); do api getServerConfig >/dev/null 2>&1 && break; sleep 0.1; done
version=$(api version | json 'd["data"]["branchName"] + " " + d["data"]["commitHash"] + " (" + d["data"]["buildTime"] + ")"' 2>/dev/null || echo "unknown")
dests=()
for i in $(seq 1 "$n"); do
    reply=$(api openRtpServer "port=0&tcp_mode=0&stream_id=cam$i")
    port=$(echo "$reply" | json 'd["port"]' 2>/dev/null) || { echo "openRtpServer: $reply" >&2; exit 1; }
    dests+=(--rtp-to "127.0.0.1:$port")
done
"$target/release/examples/camera-sim" "${dests[@]}" --bitrate-kbps "$kbps" --size "$size" \
    >"$work/cameras.log" 2>&1 &
cams=$!
streams() { api getMediaList "schema=rtsp" | json 'len(d.get("data") or [])' 2>/dev/null || echo 0; }
for _ in $(seq 1 150); do [ "$(streams)" -ge "$n" ] && break; sleep 0.2; done
clients=""
for i in $(seq 1 "$n"); do
    gst-launch-1.0 -q rtspsrc location="rtsp://127.0.0.1:$rtsp/rtp/cam$i" protocols=tcp latency=0 name=c \
        c. ! fakesink sync=false c. ! fakesink sync=false >>"$work/clients.log" 2>&1 &
    clients="$clients $!"
    sleep 0.2
done
readers() { api getMediaList "schema=rtsp" | json 'sum(m["readerCount"] for m in (d.get("data") or []))' 2>/dev/null || echo 0; }
for _ in $(seq 1 150); do [ "$(readers)" -ge "$n" ] && break; sleep 0.2; done
sleep 3
t0=$(date +%s.%N); z0=$(cpu_ticks $zlm)
sleep "$secs"
t1=$(date +%s.%N); z1=$(cpu_ticks $zlm)
zstreams=$(streams) zreaders=$(readers)
zin=$(api getMediaList "schema=rtsp" | json 'sum(m.get("bytesSpeed", 0) for m in (d.get("data") or [])) * 8 / 1e6' 2>/dev/null || echo 0)
zcpu=$(echo "($z1 - $z0) * 100 / $hz / ($t1 - $t0)" | bc -l)
cleanup
clients="" cams="" zlm=""

echo "ZLMediaKit $version: $zstreams streams ($(printf %.2f "$zin") Mbit/s in), $zreaders RTSP readers, CPU $(printf %.1f "$zcpu") % of a core, $(printf %.3f "$(echo "$zcpu / $n" | bc -l)") % per stream"
zper=$(echo "$zcpu / $n" | bc -l)
printf "\n%-40s %-10s %-12s %s\n" system streams cpu%/stream "ratio to ZLMediaKit"
printf "%-40s %-10s %-12.3f %s\n" "ZLMediaKit $(echo "$version" | cut -d' ' -f2)" "$n" "$zper" 1
# The gateway twice: readers served by its direct RTSP path (the default), then by
# gst-rtsp-server's per-reader medias (--rtsp-direct-tcp false).
for mode in direct gst-rtsp-server; do
    args="--rtsp-direct-tcp true"
    [ "$mode" = gst-rtsp-server ] && args="--rtsp-direct-tcp false"
    gwout=$(GW_BENCH_ARGS="$args" GW_BENCH_COUNTS=$n GW_BENCH_KBPS=$kbps GW_BENCH_SECONDS=$secs bash benches/gateway.sh)
    echo "$gwout" >&2
    gw_per=$(echo "$gwout" | awk -v n="$n" '$1 == n {print $5}' | tail -1)
    printf "%-40s %-10s %-12.3f %.2f\n" "gst-ipcam-gateway ($mode)" "$n" "$gw_per" "$(echo "$gw_per / $zper" | bc -l)"
done
