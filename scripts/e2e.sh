#!/bin/bash
# scripts/e2e.sh: dmakit end-to-end DMA test. Boots a Debian 12 cloud kernel under QEMU (TCG)
# with QEMU's "edu" PCI device (28-bit DMA mask) and runs e2e/edu_dma.c, a static program linked
# against libdmakit.a, as the initramfs's /init child. See e2e/README.md.
#   sudo scripts/e2e.sh            env: E2E_BUILD (default <repo>/build-e2e), E2E_MEM (1536M),
#                                  E2E_APPEND (extra kernel words, e.g. DMAKIT_LOWMEM_SEARCH_MB=1024),
#                                  E2E_DMA_MASK (edu's DMA mask, 2^n - 1; default 0x0fffffff),
#                                  E2E_RESERVE_MB (variant r's reservation, 16), E2E_DOCTOR_MEM
#                                  (variant f's guest, 3G),
#                                  E2E_TIMEOUT (seconds for QEMU, 300), E2E_SEARCH_MS (20000: the
#                                  guest's DMAKIT_LOWMEM_SEARCH_MS; TCG zeroes hugepages ~10x slower
#                                  than hardware, and the search took 2.6 s of the default 3 s here)
# Guests: variant A (pc, no IOMMU: e2e/edu_dma.c, bus address = physical; low-memory pool,
# IODMACommand bounce pages), variant B (q35 + intel-iommu, edu on vfio-pci: e2e/edu_vfio.c,
# bus addresses from dmakit's VFIO mapper), variant m (pc, E2E_BUDGET_MEM=1024M: e2e/budget.c,
# requests beyond the guest's memory and allocation until refused end in refusals, never in the
# OOM killer), the NVMe driver of examples/nvme on QEMU's nvme device over a raw image the host
# fills and checks (e2e/nvme_e2e.c, e2e/nvme_image.c): variant C (pc, no IOMMU, E2E_NVME_MEM of
# RAM so that some lies above 4 GiB) and variant D (q35 + intel-iommu, nvme on vfio-pci),
# variant R (pc, no IOMMU: `dmakit reserve` below edu's mask in one process, two
# e2e/edu_reserve.c processes drawing from it at once and round-tripping data through edu, a
# killed holder's pages returning zeroed, release) and variant F (q35, 3 GiB, RAM above 4 GiB:
# every kind of fix line `dmakit doctor` prints, applied as written, and doctor run again).
# E2E_VARIANTS="a b m c d r f" (default) picks them; NVMe knobs: E2E_NVME_MB (image size, 16),
# E2E_NVME_MDTS (the device's mdts, 3: 32 KiB), E2E_NVME_MEM (variant C's RAM, 4608M),
# E2E_NVME_MASK2, E2E_NVME_MASK3 (the second and third passes' DMA masks, 32 and 28 bits).
# Exits 0 when every variant's guest printed its PASS line and QEMU printed "EDU: clamping DMA"
# (A, B), or the host found the guest's writes, and nothing else changed, in the image (C, D).
# E2E_COVERAGE=1 (scripts/coverage.sh sets it): libdmakit.a is built with --coverage, exactly as
# the host coverage build, the guest writes its .gcda files under /gcov and prints them (tar,
# gzip, base64) on the console after the PASS line; each variant's archive is saved as
# $E2E_BUILD/guest-<variant>-gcda.tar.gz (absolute paths of the build's object files).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=${E2E_BUILD:-$ROOT/build-e2e}
MEM=${E2E_MEM:-1536M}
APPEND=${E2E_APPEND:-}
TMO=${E2E_TIMEOUT:-300}
SEARCH_MS=${E2E_SEARCH_MS:-20000}
DMA_MASK=${E2E_DMA_MASK:-0x0fffffff}     # edu's dma_mask (QEMU's default is 28 bits); 2^n - 1
BUDGET_MEM=${E2E_BUDGET_MEM:-1024M}      # variant m's guest: small, so that exhausting it is quick
t0=$(date +%s.%N)
lap() { printf '[e2e %6.1fs] %s\n' "$(awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN{print a-b}')" "$*"; }

[ "$(id -u)" -eq 0 ] || { echo "e2e.sh: run as root (apt-get, and the guest build)" >&2; exit 1; }
mkdir -p "$B"

# 1. packages (only the missing ones)
want="qemu-system-x86 busybox-static cpio gcc libc6-dev cmake make"
missing=""
for p in $want; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
export DEBIAN_FRONTEND=noninteractive
updated=0
if [ -n "$missing" ]; then
  lap "installing$missing"
  apt-get update -qq; updated=1
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# 2. the guest kernel: Debian's cloud flavour, downloaded once into $B/kernel
K=$B/kernel; mkdir -p "$K"
VMLINUZ=$(ls "$K"/kx/boot/vmlinuz-* 2>/dev/null | head -1 || true)
[ -n "$(ls "$K"/kx/lib/modules/*/kernel/drivers/vfio/pci/vfio-pci.ko* 2>/dev/null)" ] || VMLINUZ=""
if [ -z "$VMLINUZ" ]; then
  KPKG=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}' || true)
  if [ -z "$KPKG" ] && [ $updated -eq 0 ]; then
    apt-get update -qq; updated=1
    KPKG=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  fi
  [ -n "$KPKG" ] || { echo "e2e.sh: cannot resolve linux-image-cloud-amd64" >&2; exit 1; }
  chmod 777 "$K"                                 # apt's _apt user downloads into it
  (cd "$K" && rm -f linux-image-*.deb && apt-get download -qq "$KPKG")
  rm -rf "$K/kx"; mkdir -p "$K/kx"
  dpkg-deb --fsys-tarfile "$K/$KPKG"_*.deb | tar -x -C "$K/kx" --wildcards './boot/vmlinuz-*' \
      '*/kernel/drivers/vfio/*' '*/kernel/virt/lib/irqbypass.ko*'
  VMLINUZ=$(ls "$K"/kx/boot/vmlinuz-* | head -1)
  lap "guest kernel $KPKG extracted"
fi

# 3. dmakit (static library) and the guest program
COVERAGE=${E2E_COVERAGE:-0}
if [ "$COVERAGE" = 1 ]; then
  # the same flags as scripts/coverage.sh's host build, so that the two reports merge line by line
  cov=(-DCMAKE_BUILD_TYPE=Debug "-DCMAKE_C_FLAGS=--coverage -fprofile-update=atomic"); covlib=(-lgcov)
  find "$B" -name '*.gcda' -delete
else
  cov=(-DCMAKE_BUILD_TYPE=Release "-DCMAKE_C_FLAGS="); covlib=()
fi
cmake -S "$ROOT" -B "$B" "${cov[@]}" -DDK_BUILD_TESTS=OFF -DDK_BUILD_TOOLS=OFF -DDK_BUILD_EXAMPLES=OFF >/dev/null
cmake --build "$B" --target dmakit_static -j"$(nproc)" >/dev/null
for prog in edu_dma edu_vfio budget edu_reserve; do
  gcc -std=gnu11 -O2 -Wall -Wextra -Werror -static -I"$ROOT/include" -I"$ROOT/src" -o "$B/$prog" \
      "$ROOT/e2e/$prog.c" "$B/libdmakit.a" -lpthread "${covlib[@]}"
done
gcc -std=gnu11 -O2 -Wall -Wextra -Werror -static -I"$ROOT/include" -I"$ROOT/examples/nvme" -o "$B/nvme_e2e" \
    "$ROOT/e2e/nvme_e2e.c" "$ROOT/examples/nvme/nvme.c" "$B/libdmakit.a" -lpthread "${covlib[@]}"
gcc -std=gnu11 -O2 -Wall -Wextra -Werror -o "$B/nvme_image" "$ROOT/e2e/nvme_image.c"
# the dmakit command itself (variants r and f run it as an administrator would) and the
# helper that runs a command as uid 65534 or with io_uring forbidden (variant f)
gcc -std=gnu11 -O2 -Wall -Wextra -Werror -static -D_GNU_SOURCE -DDK_SOURCE_DIR='""' -I"$ROOT/include" \
    -o "$B/dmakit" "$ROOT"/tools/dmakit.c "$ROOT"/tools/util.c "$ROOT"/tools/canvas.c "$ROOT"/tools/cmd_*.c \
    "$B/libdmakit.a" -lpthread -lm "${covlib[@]}"
gcc -std=gnu11 -O2 -Wall -Wextra -Werror -static -I"$ROOT/tests/support" -o "$B/runas" "$ROOT/e2e/runas.c"
lap "libdmakit.a and the static guest programs built"

# 4. initramfs: busybox, /init, the program
R=$(mktemp -d); trap 'rm -rf "$R"' EXIT
chmod 755 "$R"                                   # the guest's /: variant f runs commands as uid 65534
mkdir -p "$R/bin" "$R/proc" "$R/sys" "$R/dev" "$R/run" "$R/tmp"
cp /bin/busybox "$R/bin/"; ln -s busybox "$R/bin/sh"
cp "$ROOT/e2e/init" "$R/init"; chmod +x "$R/init"
cp "$B/edu_dma" "$B/edu_vfio" "$B/budget" "$B/nvme_e2e" "$B/edu_reserve" "$R/"
cp "$B/dmakit" "$B/runas" "$R/bin/"
# busybox has no sudo: as in the guest everything runs as root, a doctor fix line "sudo CMD" is
# applied as written through this stand-in, which runs CMD (root stays root; it grants nothing)
printf '#!/bin/sh\n# stand-in for sudo in the busybox guest: runs the command as the caller (root)\nexec "$@"\n' >"$R/bin/sudo"
chmod +x "$R/bin/sudo"
mkdir -p "$R/lib/modules"
KV=$(ls "$K/kx/lib/modules")
for m in virt/lib/irqbypass drivers/vfio/vfio drivers/vfio/vfio_iommu_type1 drivers/vfio/vfio_virqfd \
         drivers/vfio/pci/vfio-pci-core drivers/vfio/pci/vfio-pci; do
  f=$(ls "$K/kx/lib/modules/$KV/kernel/$m".ko*); o="$R/lib/modules/$(basename "$m").ko"
  case $f in *.xz) xz -dc "$f" >"$o";; *.zst) zstd -dc "$f" >"$o";; *) cp "$f" "$o";; esac
done
(cd "$R" && find . | cpio -o -H newc --quiet | gzip -1) > "$B/initrd.cpio.gz"
lap "initramfs built ($(du -h "$B/initrd.cpio.gz" | cut -f1))"

# 5. boot each variant (TCG: this project's machines have no usable KVM)
VARIANTS=${E2E_VARIANTS:-a b m c d r f}
NVME_MB=${E2E_NVME_MB:-16}
NVME_MDTS=${E2E_NVME_MDTS:-3}
# an NVMe variant's device: a raw image the host fills with e2e/nvme_pattern.h's pattern
nvme_image() {
  IMG=$B/nvme-$1.img
  "$B/nvme_image" fill "$IMG" "$NVME_MB" >/dev/null
  devices=(-drive "file=$IMG,if=none,id=nvm,format=raw" -device "nvme,serial=dmakit-e2e,drive=nvm,mdts=$NVME_MDTS")
}
rc=0
for v in $VARIANTS; do
  devices=(-device "edu,dma_mask=$DMA_MASK"); vmem=$MEM; clamp=1
  case $v in
    a) machine=(-machine pc); words=""; pass="E2E-DMA-ALL: PASS" ;;
    b) machine=(-machine q35 -device intel-iommu,intremap=on); words="intel_iommu=on E2E_MODE=vfio"
       pass="E2E-VFIO-ALL: PASS" ;;
    m) machine=(-machine pc); words="E2E_MODE=budget"; pass="E2E-BUDGET-ALL: PASS"; vmem=$BUDGET_MEM; clamp=0 ;;
    c) machine=(-machine pc); vmem=${E2E_NVME_MEM:-4608M}; nvme_image c
       words="E2E_MODE=nvme-sysfs initcall_blacklist=nvme_init E2E_NVME_MASK2=${E2E_NVME_MASK2:-} E2E_NVME_MASK3=${E2E_NVME_MASK3:-}"
       pass="E2E-NVME-ALL: PASS" ;;
    d) machine=(-machine q35 -device intel-iommu,intremap=on); nvme_image d
       words="intel_iommu=on E2E_MODE=nvme-vfio initcall_blacklist=nvme_init E2E_NVME_MASK2=${E2E_NVME_MASK2:-} E2E_NVME_MASK3=${E2E_NVME_MASK3:-}"
       pass="E2E-NVME-ALL: PASS" ;;
    r) machine=(-machine pc); words="E2E_MODE=reserve"; pass="E2E-RESERVE-ALL: PASS"; clamp=0 ;;
    f) machine=(-machine q35); words="E2E_MODE=doctor DMAKIT_LOWMEM_SEARCH_MB=256"; pass="E2E-DOCTOR-ALL: PASS"; clamp=0 ;;
    *) echo "e2e.sh: unknown variant $v" >&2; exit 2 ;;
  esac
  LOG=$B/guest-$v.log
  s=$(date +%s.%N)
  qrc=0
  # variant f: RAM above 4 GiB (q35 puts 2 GiB below it, the rest above), so the kernel hands
  # out high memory first and a 28-bit mask goes unmet until something is reserved
  [ "$v" = f ] && vmem=${E2E_DOCTOR_MEM:-3G}
  timeout "$TMO" qemu-system-x86_64 -accel tcg "${machine[@]}" -m "$vmem" -smp 1 \
      -display none -serial stdio -monitor none -no-reboot -nic none \
      -kernel "$VMLINUZ" -initrd "$B/initrd.cpio.gz" \
      -append "console=ttyS0 quiet panic=-1 DMAKIT_LOWMEM_SEARCH_MS=$SEARCH_MS E2E_DMA_MASK=$DMA_MASK E2E_RESERVE_MB=${E2E_RESERVE_MB:-16} E2E_COVERAGE=$COVERAGE $words $APPEND" \
      "${devices[@]}" </dev/null >"$LOG" 2>&1 || qrc=$?
  qt=$(awk -v a="$(date +%s.%N)" -v b="$s" 'BEGIN{printf "%.1f", a-b}')
  echo "----- guest output, variant $v ($LOG) -----"
  tr -d '\r' < "$LOG" | sed '/^E2E-GCOV-BEGIN/,/^E2E-GCOV-END/d'
  echo "----- end of guest output -----"
  if [ "$COVERAGE" = 1 ]; then
    rm -f "$B/guest-$v-gcda.tar.gz"
    if tr -d '\r' < "$LOG" | sed -n '/^E2E-GCOV-BEGIN/,/^E2E-GCOV-END/p' | grep -v '^E2E-GCOV-' \
         | base64 -d > "$B/guest-$v-gcda.tar.gz" 2>/dev/null && [ -s "$B/guest-$v-gcda.tar.gz" ]; then
      lap "variant $v: coverage data saved ($B/guest-$v-gcda.tar.gz)"
    else
      lap "variant $v: no coverage data on the console"; rm -f "$B/guest-$v-gcda.tar.gz"; rc=1
    fi
  fi
  if [ $qrc -eq 124 ]; then lap "variant $v: QEMU timed out after ${TMO}s"; fi
  # edu clamps in the negative controls; variant A has none when no page above the mask was
  # handed out (all RAM below a wide mask, or the kernel's layout this run): it says E2E-NO-CLAMP
  if [ "$v" = c ] || [ "$v" = d ]; then
    # the NVMe variants: the guest's PASS line, then the host's own look at the image
    seen=0; grep -q "$pass" "$LOG" && seen=1
    if [ $seen -eq 1 ] && "$B/nvme_image" check "$IMG" "$LOG"; then ok=1; else ok=0; fi
  elif [ "$v" = r ] && grep -q "E2E-RESERVE-ALL: SKIP" "$LOG"; then
    ok=2
  elif grep -q "$pass" "$LOG" && { [ $clamp -eq 0 ] || grep -q 'EDU: clamping DMA' "$LOG" || grep -q 'E2E-NO-CLAMP' "$LOG"; }; then
    ok=1    # (variants m, r and f make no negative control: their pass line alone decides)
  else
    ok=0
  fi
  if [ $ok -eq 2 ]; then
    lap "variant r: SKIP ($(grep -o 'E2E-RESERVE-ALL: SKIP.*' "$LOG" | tr -d '\r'))"
  elif [ $ok -eq 1 ]; then
    lap "variant $v: PASS (QEMU ${qt}s, mem $vmem)"
  else
    lap "variant $v: FAIL (QEMU exit $qrc after ${qt}s)"
    rc=1
  fi
done
exit $rc
