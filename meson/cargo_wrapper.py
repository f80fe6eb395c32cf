#!/usr/bin/env python3
"""Called by meson: builds the plugin crates (and the programs asked for with --bin) with cargo
and copies the shared libraries and binaries into meson's build directory. Shares the
workspace's target dir (or CARGO_TARGET_DIR) so a meson build after `cargo build --release`
costs nothing extra."""
import argparse
import os
import shutil
import subprocess
import sys

parser = argparse.ArgumentParser()
parser.add_argument("--source-root", required=True)
parser.add_argument("--out-dir", required=True)
parser.add_argument("--buildtype", default="release")
parser.add_argument("--bin", action="append", default=[], metavar="PACKAGE:BINARY",
                    help="also build this binary of this package")
parser.add_argument("plugins", nargs="+")
args = parser.parse_args()

profile = "dev" if args.buildtype in ("debug", "plain") else "release"
profile_dir = "debug" if profile == "dev" else "release"
target_dir = os.environ.get("CARGO_TARGET_DIR") or os.path.join(args.source_root, "target")
base = ["cargo", "build", "--profile", profile, "--target-dir", target_dir,
        "--manifest-path", os.path.join(args.source_root, "Cargo.toml")]


def cargo(extra):
    cmd = base + extra
    print("+", " ".join(cmd), flush=True)
    if subprocess.call(cmd) != 0:
        sys.exit(1)


cmd = ["--lib"]
for p in args.plugins:
    cmd += ["-p", "gst-plugin-" + p]
cargo(cmd)
bins = [b.split(":", 1) for b in args.bin]
for package, binary in bins:
    cargo(["-p", package, "--bin", binary])

for p in args.plugins:
    lib = "libgst%s.so" % p
    shutil.copy2(os.path.join(target_dir, profile_dir, lib), os.path.join(args.out_dir, lib))
for _, binary in bins:
    shutil.copy2(os.path.join(target_dir, profile_dir, binary), os.path.join(args.out_dir, binary))
