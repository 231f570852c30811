#!/bin/sh
# scripts/deps.sh: install the Debian 12 packages dmakit needs, only those missing.
#   deps.sh build   compiler, CMake, pkg-config
#   deps.sh test    the above plus cmocka (tests), the sanitizer runtimes, g++ and clang
#                   (clang++: the C++ layer's tests build with g++ and compile with both) and
#                   cairo (the PNG pictures of `dmakit map`, which tests/test_cli.sh checks)
set -eu
want="gcc make cmake pkg-config libc6-dev"
case "${1:-build}" in
  test) want="$want libcmocka-dev libasan8 libubsan1 libtsan2 clang g++ python3 util-linux libcairo2-dev" ;;
esac
missing=""
for p in $want; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "deps.sh: missing packages:$missing (run as root, or install them)" >&2
  exit 1
fi
echo "deps.sh: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends $missing >/dev/null
