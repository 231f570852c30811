#!/bin/sh
# tests/run_as_user.sh BIN: run a test program as an ordinary user (uid/gid 65534). As root the
# binary is copied where that user can reach it and started through setpriv; as a user it
# simply runs. This is how CI proves the API works without privilege.
set -eu
bin="$1"
if [ "$(id -u)" -ne 0 ]; then exec "$bin"; fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cp "$bin" "$dir/"
chmod 755 "$dir" "$dir/$(basename "$bin")"
cd "$dir"
setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all "$dir/$(basename "$bin")"
