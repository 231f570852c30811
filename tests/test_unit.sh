#!/bin/sh
# tests/test_unit.sh BUILD_DIR: the boot-time reservation as installed. `cmake --install` puts
# dmakit-reserve.service and its environment file in a scratch prefix; systemd-analyze verify
# accepts the unit (where systemd is installed); then the unit's ExecStart and ExecStop lines,
# exactly as written in the installed unit, are run with the installed environment file's
# variables (the mask and size set to ones any machine meets: 48 bits, 4 MiB) in a private
# DMAKIT_RESERVE_DIR: the reservation appears, and stopping gives it back with nr_hugepages as
# it was. Root and 2 MiB hugepages are needed for that part (skipped with the reason otherwise).
set -u
build="${1:?usage: test_unit.sh BUILD_DIR}"
pass=0 fail=0
ok() { pass=$((pass + 1)); echo "ok - $1"; }
nok() { fail=$((fail + 1)); echo "not ok - $1"; [ -n "${2:-}" ] && sed 's/^/#   /' "$2" | head -20; }
pfx=$(mktemp -d)
cleanup() {
  [ -d "$pfx/run" ] && DMAKIT_RESERVE_DIR="$pfx/run" "$pfx/bin/dmakit" reserve --release >/dev/null 2>&1
  umount "$pfx/run/hugetlbfs-2M" 2>/dev/null
  rm -rf "$pfx"
}
trap cleanup EXIT
cmake --install "$build" --prefix "$pfx" >/dev/null
unit="$pfx/lib/systemd/system/dmakit-reserve.service"
envf="$pfx/etc/default/dmakit-reserve"
[ -f "$unit" ] && ok "cmake --install installs dmakit-reserve.service" || nok "unit not installed"
[ -f "$envf" ] && ok "cmake --install installs etc/default/dmakit-reserve" || nok "environment file not installed"
grep -q "^EnvironmentFile=-$envf\$" "$unit" && ok "the unit reads the installed environment file" || nok "EnvironmentFile" "$unit"
if command -v systemd-analyze >/dev/null 2>&1; then
  if systemd-analyze verify --man=no "$unit" >"$pfx/verify" 2>&1; then ok "systemd-analyze verify accepts the unit"
  else nok "systemd-analyze verify" "$pfx/verify"; fi
else
  echo "# systemd-analyze is not installed: unit not verified"
fi
hp=/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages
. "$(dirname "$0")/../scripts/hugepages.sh"
persistent() { dk_hp_persistent "${hp%/*}"; }   # nr_hugepages less surplus, read whole
if [ "$(id -u)" -ne 0 ] || [ ! -w "$hp" ]; then
  echo "# SKIP: running the unit's commands needs root and 2 MiB hugepages"
else
  set -a
  . "$envf"
  set +a
  DMAKIT_RESERVE_MASK=48bit
  DMAKIT_RESERVE_SIZE=4M
  DMAKIT_RESERVE_DIR="$pfx/run"
  export DMAKIT_RESERVE_MASK DMAKIT_RESERVE_SIZE DMAKIT_RESERVE_DIR
  start=$(sed -n 's/^ExecStart=//p' "$unit")
  stop=$(sed -n 's/^ExecStop=-//p' "$unit")
  nr0=$(persistent)
  if eval "$start" >"$pfx/out" 2>&1; then ok "ExecStart as written reserves (exit 0)"; else nok "ExecStart: $start" "$pfx/out"; fi
  "$pfx/bin/dmakit" reserve --status --json >"$pfx/status" 2>&1
  if python3 -c "import json,sys; d=json.load(open(sys.argv[1])); r=d['reservations']; sys.exit(not (len(r) == 1 and r[0]['mask'] == (1 << 48) - 1 and r[0]['bytes'] == 4 << 20))" "$pfx/status"
  then ok "reserve --status shows the unit's reservation (48 bits, 4 MiB)"; else nok "status after ExecStart" "$pfx/status"; fi
  [ "$(persistent)" -eq $((nr0 + 2)) ] && ok "persistent hugepages rose by the 2 pages kept" || nok "persistent hugepages $(persistent), was $nr0"
  if eval "$stop" >"$pfx/out" 2>&1; then ok "ExecStop as written releases (exit 0)"; else nok "ExecStop: $stop" "$pfx/out"; fi
  [ "$(persistent)" -eq "$nr0" ] && ok "persistent hugepages back to $nr0" || nok "persistent hugepages $(persistent) after release, was $nr0"
fi
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
