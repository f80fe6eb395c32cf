#!/usr/bin/env bash
# `make test`'s meson check: a meson build and install produce plugins GStreamer loads,
# with every element of the project registered, and the gateway (binary, sample config that
# loads, systemd unit naming both). MESON_CHECK_BUILDTYPE=debug reuses a debug cargo build.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
build=$root/target/meson-check
stage=$root/target/meson-stage
rm -rf "$build" "$stage"
meson setup "$build" --buildtype="${MESON_CHECK_BUILDTYPE:-release}" --prefix=/usr/local \
    -Dplugindir=/usr/lib/gst-ipcam-check >/dev/null
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

# The gateway, as installed under the prefix /usr/local.
gw=$stage/usr/local/bin/gst-ipcam-gateway
conf=$stage/usr/local/etc/gst-ipcam/gateway.toml
unit=$stage/usr/local/lib/systemd/system/gst-ipcam-gateway.service
check() { # description command...
    local what=$1; shift
    if "$@" >/dev/null 2>&1; then echo "meson-check: $what"; else echo "meson-check: FAILED: $what"; fail=1; fi
}
check "gateway installed in bindir" test -x "$gw"
check "sample config installed in sysconfdir" cmp "$conf" examples/gateway/gateway.toml
check "systemd unit installed in prefix/lib/systemd/system" test -f "$unit"
check "the unit runs the installed binary with the installed config" \
    grep -qx "ExecStart=/usr/local/bin/gst-ipcam-gateway --config /usr/local/etc/gst-ipcam/gateway.toml --data-dir /var/lib/gst-ipcam" "$unit"
check "installed gateway --help" "$gw" --help
check "installed gateway --check-config on the installed config" "$gw" --config "$conf" --check-config
# A reinstall keeps an operator's config.
echo "sip_port = 5070" >>"$conf"
DESTDIR="$stage" meson install -C "$build" --no-rebuild >/dev/null
check "a reinstall keeps an edited config" grep -qx "sip_port = 5070" "$conf"
if [ $fail = 0 ]; then echo "meson-check: 1 passed, 0 failed"; else echo "meson-check: 0 passed, 1 failed"; exit 1; fi
