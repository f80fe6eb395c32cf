# gst-ipcam: the README's commands.
#   make demo     build and run the demo (installs missing system packages first)
#   make test     fmt check, clippy, every test, and the meson build check
#   make install  build with meson and install the plugins into GStreamer's plugin directory
#   make bench    run the side-by-side benchmarks in benches/
#   make soak     run the gateway for 30 minutes under load and plot its resources

SHELL := /bin/bash
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

# Debian/Ubuntu packages the build, the demo and the tests need.
APT_PACKAGES := \
	pkg-config build-essential \
	libglib2.0-dev libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev \
	libgstreamer-plugins-bad1.0-dev libgstrtspserver-1.0-dev \
	gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
	gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-rtsp \
	ffmpeg tshark meson ninja-build python3 python3-gi gir1.2-gst-rtsp-server-1.0 curl \
	bc python3-matplotlib \
	chromium gstreamer1.0-nice fonts-dejavu-core faketime iproute2 util-linux

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps build release test lint unit meson-check test-faults demo install bench soak fuzz clean

all: build

# Installs only what is missing, so a prepared machine pays nothing.
deps:
	@missing=""; for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "Installing missing packages:$$missing"; \
		echo "wireshark-common wireshark-common/install-setuid boolean false" | $(SUDO) debconf-set-selections; \
		$(SUDO) apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	fi
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust (rustup) first"; exit 1; }

build: deps
	$(CARGO) build --workspace --all-targets

release: deps
	$(CARGO) build --release --workspace --lib --bins --examples

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit: build
	$(CARGO) test --workspace --no-fail-fast

meson-check: deps
	./meson/check.sh

test: lint unit meson-check

# The gateway's fault matrix alone (also part of `unit`): about 2.5 minutes.
test-faults: build
	$(CARGO) test -p gst-ipcam-gateway --test faults

demo: release
	./scripts/demo.sh

install: deps
	meson setup builddir --buildtype=release --reconfigure 2>/dev/null || meson setup builddir --buildtype=release
	meson compile -C builddir
	$(SUDO) meson install -C builddir

bench: release
	@for b in benches/*.sh; do [ "$$b" = benches/soak.sh ] && continue; echo "== $$b"; bash "$$b" || exit 1; done

# 30 minutes, 50 cameras, readers in rounds: RSS/files/threads/CPU to target/soak/ (CSV, PNG).
soak: release
	bash benches/soak.sh

# Short fuzzing sessions of every target (needs cargo-fuzz; stable toolchain via RUSTC_BOOTSTRAP).
FUZZ_SECONDS ?= 60
fuzz:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz
	# New inputs go to fuzz/target/corpus/<target>; the committed seeds in fuzz/corpus are read only.
	cd fuzz && for t in $$(RUSTC_BOOTSTRAP=1 $(CARGO) fuzz list); do \
		mkdir -p target/corpus/$$t && \
		RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $$t target/corpus/$$t corpus/$$t -- -max_total_time=$(FUZZ_SECONDS) || exit 1; done

clean:
	$(CARGO) clean
	rm -rf builddir
