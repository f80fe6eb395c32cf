#!/bin/sh
# meson install script: installs a sample config unless the operator already has one there
# (a reinstall must not overwrite an edited config). $1 the file, $2 the absolute destination.
set -eu
dest="${DESTDIR:-}$2"
if [ -e "$dest" ]; then
    echo "Keeping $dest (the sample is $1)"
else
    install -D -m 0644 "$1" "$dest"
    echo "Installing $1 to $dest"
fi
