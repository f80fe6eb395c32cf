#!/usr/bin/env bash
# Throughput of rtspinterleavedparse against the copy floor (filesrc ! fakesink), in one run.
#
#   benches/rtspinterleaved.sh [size-MB] [blocksize...]
#
# Generates a dump of `$`-framed RTP (~1 KB frames on channels 0 and 2, an RTCP SR on 1
# every 100 frames, the RTSP DESCRIBE/SETUP/PLAY text at the start), builds the plugin in
# release mode and times both pipelines over the same (page-cached) file.
set -euo pipefail

SIZE_MB=${1:-500}
shift || true
BLOCKSIZES=${*:-4096 65536}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=${BENCH_DIR:-$CARGO_TARGET_DIR/bench-rtspinterleaved}
DUMP=$WORK/dump-${SIZE_MB}MB.bin
mkdir -p "$WORK"

(cd "$ROOT" && cargo build --release -q -p gst-plugin-rtspinterleaved --lib --examples)
export GST_PLUGIN_PATH=$CARGO_TARGET_DIR/release${GST_PLUGIN_PATH:+:$GST_PLUGIN_PATH}
gst-inspect-1.0 rtspinterleavedparse > /dev/null

if [ ! -s "$DUMP" ]; then
    python3 - "$DUMP" "$SIZE_MB" <<'PY'
import struct, sys
path, size = sys.argv[1], int(sys.argv[2]) * 1024 * 1024
sdp = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=bench\r\nt=0 0\r\n"
       b"m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:stream=0\r\n"
       b"m=audio 0 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\na=control:stream=1\r\n")
url = b"rtsp://127.0.0.1:8554/bench"
head = (b"DESCRIBE " + url + b" RTSP/1.0\r\nCSeq: 1\r\n\r\n"
        b"RTSP/1.0 200 OK\r\nCSeq: 1\r\nContent-Type: application/sdp\r\nContent-Base: " + url +
        b"/\r\nContent-Length: %d\r\n\r\n" % len(sdp) + sdp)
for cseq, (track, ch) in enumerate([(0, 0), (1, 2)], start=2):
    t = b"RTP/AVP/TCP;unicast;interleaved=%d-%d" % (ch, ch + 1)
    head += b"SETUP " + url + b"/stream=%d RTSP/1.0\r\nCSeq: %d\r\nTransport: " % (track, cseq) + t + b"\r\n\r\n"
    head += b"RTSP/1.0 200 OK\r\nCSeq: %d\r\nTransport: " % cseq + t + b"\r\nSession: 1\r\n\r\n"
head += b"PLAY " + url + b"/ RTSP/1.0\r\nCSeq: 4\r\nSession: 1\r\n\r\nRTSP/1.0 200 OK\r\nCSeq: 4\r\nSession: 1\r\n\r\n"
payload = bytes((i * 31) & 0xff for i in range(1400))
with open(path, "wb") as f:
    f.write(head)
    written, seq, chunk = len(head), 0, []
    while written < size:
        seq += 1
        if seq % 100 == 0:
            pkt = struct.pack(">BBHI", 0x80, 200, 6, 7) + bytes(20)
            ch = 1
        elif seq % 10 == 0:
            pkt = struct.pack(">BBHII", 0x80, 8, seq & 0xffff, seq * 160 & 0xffffffff, 8) + payload[:160]
            ch = 2
        else:
            n = 900 + (seq * 37) % 250
            pkt = struct.pack(">BBHII", 0x80, 96 | (0x80 if seq % 5 == 0 else 0), seq & 0xffff,
                              (seq // 5) * 3000 & 0xffffffff, 7) + payload[:n - 12]
            ch = 0
        frame = b"$" + bytes([ch]) + struct.pack(">H", len(pkt)) + pkt
        chunk.append(frame)
        written += len(frame)
        if len(chunk) >= 4096:
            f.write(b"".join(chunk)); chunk = []
    f.write(b"".join(chunk))
PY
fi

BYTES=$(stat -c %s "$DUMP")
cat "$DUMP" > /dev/null  # page cache

run() {  # prints the best of $REPEAT wall times in seconds (the machine is shared)
    local t0 t1 t best=""
    for _ in $(seq "${REPEAT:-3}"); do
        t0=$(date +%s.%N)
        gst-launch-1.0 -q $1 > /dev/null
        t1=$(date +%s.%N)
        t=$(echo "$t1 - $t0" | bc -l)
        if [ -z "$best" ] || [ "$(echo "$t < $best" | bc -l)" = 1 ]; then best=$t; fi
    done
    echo "$best"
}

echo "dump: $DUMP ($((BYTES / 1024 / 1024)) MB)"
for bs in $BLOCKSIZES; do
    floor=$(run "filesrc location=$DUMP blocksize=$bs ! fakesink")
    # async=false: the pads are fed from one streaming thread, so a sink waiting for
    # preroll would block the others (as with any demuxer without queues).
    parse=$(run "filesrc location=$DUMP blocksize=$bs ! rtspinterleavedparse name=p \
        p.rtp_0 ! fakesink async=false p.rtcp_1 ! fakesink async=false p.rtp_2 ! fakesink async=false")
    awk -v b="$BYTES" -v f="$floor" -v p="$parse" -v bs="$bs" 'BEGIN {
        printf "blocksize %6d: floor %7.1f MB/s (%.2f s)  parse %7.1f MB/s (%.2f s)  ratio %.2f\n",
            bs, b / f / 1048576, f, b / p / 1048576, p, f / p }'
    core=$("$CARGO_TARGET_DIR/release/examples/core_throughput" "$DUMP" "$bs")
    echo "  $core"
done
# GStreamer's own cost of one buffer per packet: as many empty buffers, fakesrc ! fakesink.
packets=$(echo "$core" | sed -n 's/.*s, \([0-9]*\) packets.*/\1/p')
bufs=$(run "fakesrc num-buffers=$packets sizetype=empty ! fakesink")
echo "  per-buffer floor: fakesrc num-buffers=$packets ! fakesink: $bufs s"
