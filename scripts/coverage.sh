#!/bin/sh
# scripts/coverage.sh: line and branch coverage of the library (src/ only: tools/, tests/,
# examples/ and e2e/ are not counted), measured with gcovr from Debian's gcovr package.
#   sh scripts/coverage.sh            host tests, then (as root) the end-to-end guests; merged
#   DK_COV_GUEST=0 sh scripts/coverage.sh     host tests only
#   DK_COV_GUEST=0 DK_COV_TESTS='^test_budget$' sh scripts/coverage.sh
#        while writing tests: run only the CTest tests matching the regex and ADD their counts
#        to the .gcda files an earlier full host run left (nothing is deleted), then report. The
#        library's objects must be unchanged since that run (only tests added), else gcov
#        refuses the stale counts; the figure to publish comes from a full run.
# 1. build-coverage/host: the library and tests built with --coverage at -O0 (Debug), every host
#    test run under the machine's test lock (the same ctest list as scripts/test.sh).
# 2. build-coverage/guest (root): scripts/e2e.sh with E2E_COVERAGE=1 builds libdmakit.a with the
#    same flags, and both guests (no IOMMU; VFIO behind a vIOMMU) hand their .gcda files back
#    over the console.
# 3. gcovr reads each run into a JSON tracefile and merges them: build-coverage/summary.txt (per
#    file and total), coverage.json (gcovr's summary JSON) and html/index.html (per line).
# Branches: gcovr --exclude-unreachable-branches drops branches gcc attributes to lines with no
# code of their own (a closing brace, a label), so what is counted is a source condition's
# outcomes. C has no exceptions, so there are no throw branches to exclude. The figure is gcc's
# branch coverage at -O0: each `a && b` counts both outcomes of each operand.
set -eu
cd "$(dirname "$0")/.."
root=$(pwd)
sh scripts/deps.sh test
if ! command -v gcovr >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then echo "coverage.sh: gcovr missing (apt-get install gcovr, as root)" >&2; exit 1; fi
  echo "coverage.sh: installing gcovr"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gcovr >/dev/null
fi
out="${DK_COV_BUILD:-$root/build-coverage}"
lock="${DK_TEST_LOCK:-/tmp/dmakit-test.lock}"
[ -e "$lock" ] || (umask 0; : >"$lock")
flags="--coverage -fprofile-update=atomic"
gcovr_common="--root $root --filter $root/src/ --exclude-unreachable-branches"
mkdir -p "$out"
traces=""

# 1. host
echo "=== coverage: host build and tests"
cmake -S . -B "$out/host" -DCMAKE_BUILD_TYPE=Debug "-DCMAKE_C_FLAGS=$flags" >/dev/null
cmake --build "$out/host" -j"$(nproc)" >/dev/null
tests_re="${DK_COV_TESTS:-}"
[ -n "$tests_re" ] || find "$out/host" -name '*.gcda' -delete
# A failing test still leaves its coverage; the run's status is reported at the end. The two
# build-level checks are left out: an instrumented library exports gcov's symbols and needs
# libgcov in its consumer, and neither check runs code of src/.
# The *_as_user tests run as uid 65534 (tests/run_as_user.sh), which cannot write the .gcda
# files root's runs made: they run second, once the directories holding .gcno files (objects
# only, no programs) and the .gcda files in them are open to that user.
open_counts() {
  find "$out/host" -name '*.gcno' -exec dirname {} + | sort -u | while read -r d; do chmod 1777 "$d"; done
  find "$out/host" -name '*.gcda' -exec chmod 0666 {} +
}
host_rc=0
: >"$out/host-ctest.log"
run_ctest() {
  ( flock 9 && LSAN_OPTIONS="suppressions=$root/tests/lsan.supp" \
      ctest --test-dir "$out/host" --output-on-failure --timeout 900 "$@" ) 9<"$lock" >>"$out/host-ctest.log" 2>&1 ||
    host_rc=$?
}
if [ -n "$tests_re" ]; then
  open_counts
  run_ctest -R "$tests_re" -E '^(exported_symbols|install_smoke)$'
else
  run_ctest -E '^(exported_symbols|install_smoke)$|_as_user$'
  open_counts
  run_ctest -R '_as_user$'
fi
grep -E 'tests passed|tests failed' "$out/host-ctest.log" || tail -n 3 "$out/host-ctest.log"
objs=CMakeFiles/dmakit_obj.dir     # the library's objects: the only .gcda files that count
# shellcheck disable=SC2086
gcovr $gcovr_common --object-directory "$out/host" "$out/host/$objs" --json -o "$out/host.json"
traces="--add-tracefile $out/host.json"

# 2. guests
guest_rc=0
if [ "${DK_COV_GUEST:-1}" = 1 ] && [ "$(id -u)" -eq 0 ]; then
  echo "=== coverage: the end-to-end guests"
  E2E_BUILD="$out/guest" E2E_COVERAGE=1 bash scripts/e2e.sh >"$out/guest-e2e.log" 2>&1 || guest_rc=$?
  grep '^\[e2e' "$out/guest-e2e.log" || true
  for tarball in "$out"/guest/guest-*-gcda.tar.gz; do
    [ -f "$tarball" ] || continue
    v=$(basename "$tarball" -gcda.tar.gz)
    find "$out/guest" -name '*.gcda' -delete
    x=$(mktemp -d)
    tar -xzf "$tarball" -C "$x"
    # the archive holds the build's absolute paths under the guest's GCOV_PREFIX
    (cd "$x$out/guest" && find . -name '*.gcda' | while read -r f; do cp "$f" "$out/guest/$f"; done)
    rm -rf "$x"
    # shellcheck disable=SC2086
    gcovr $gcovr_common --object-directory "$out/guest" "$out/guest/$objs" --json -o "$out/$v.json"
    traces="$traces --add-tracefile $out/$v.json"
  done
elif [ "${DK_COV_GUEST:-1}" = 1 ]; then
  echo "=== coverage: the end-to-end guests need root: host tests only"
fi

# 3. merged report
mkdir -p "$out/html"
# shellcheck disable=SC2086
gcovr $gcovr_common $traces --txt "$out/summary.txt" --json-summary-pretty --json-summary "$out/coverage.json" \
  --html-details "$out/html/index.html"
# shellcheck disable=SC2086
gcovr $gcovr_common $traces --branches --txt "$out/branches.txt"
cat "$out/summary.txt"
grep -E '^TOTAL' "$out/branches.txt" | awk '{ printf "branches: %s of %s taken (%s)\n", $3, $2, $4 }'
echo "coverage: $out/summary.txt, $out/branches.txt, $out/coverage.json, $out/html/index.html"
[ "$host_rc" -eq 0 ] || echo "coverage: host tests failed (exit $host_rc): $out/host-ctest.log" >&2
[ "$guest_rc" -eq 0 ] || echo "coverage: the end-to-end run failed (exit $guest_rc): $out/guest-e2e.log" >&2
[ "$host_rc" -eq 0 ] && [ "$guest_rc" -eq 0 ]
