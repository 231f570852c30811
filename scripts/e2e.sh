#!/bin/bash
# scripts/e2e.sh: dmakit end-to-end DMA test. Boots a Debian 12 cloud kernel under QEMU (TCG)
# with QEMU's "edu" PCI device (28-bit DMA mask) and runs e2e/edu_dma.c, a static program linked
# against libdmakit.a, as the initramfs's /init child. See e2e/README.md.
#   sudo scripts/e2e.sh            env: E2E_BUILD (default <repo>/build-e2e), E2E_MEM (1536M),
#                                  E2E_APPEND (extra kernel words, e.g. DMAKIT_LOWMEM_SEARCH_MB=1024),
#                                  E2E_DMA_MASK (edu's DMA mask, 2^n - 1; default 0x0fffffff),
#                                  E2E_TIMEOUT (seconds for QEMU, 300), E2E_SEARCH_MS (20000: the
#                                  guest's DMAKIT_LOWMEM_SEARCH_MS; TCG zeroes hugepages ~10x slower
#                                  than hardware, and the search took 2.6 s of the default 3 s here)
# Two guests: variant A (pc, no IOMMU: e2e/edu_dma.c, bus address = physical; low-memory pool,
# IODMACommand bounce pages) and variant B (q35 + intel-iommu, edu on vfio-pci: e2e/edu_vfio.c,
# bus addresses from dmakit's VFIO mapper). E2E_VARIANTS="a b" (default) picks them.
# Exits 0 when every variant's guest printed its PASS line and QEMU printed "EDU: clamping DMA".
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=${E2E_BUILD:-$ROOT/build-e2e}
MEM=${E2E_MEM:-1536M}
APPEND=${E2E_APPEND:-}
TMO=${E2E_TIMEOUT:-300}
SEARCH_MS=${E2E_SEARCH_MS:-20000}
DMA_MASK=${E2E_DMA_MASK:-0x0fffffff}     # edu's dma_mask (QEMU's default is 28 bits); 2^n - 1
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
cmake -S "$ROOT" -B "$B" -DCMAKE_BUILD_TYPE=Release -DDK_BUILD_TESTS=OFF -DDK_BUILD_TOOLS=OFF >/dev/null
cmake --build "$B" --target dmakit_static -j"$(nproc)" >/dev/null
for prog in edu_dma edu_vfio; do
  gcc -std=gnu11 -O2 -Wall -Wextra -Werror -static -I"$ROOT/include" -o "$B/$prog" \
      "$ROOT/e2e/$prog.c" "$B/libdmakit.a" -lpthread
done
lap "libdmakit.a and the static guest programs built"

# 4. initramfs: busybox, /init, the program
R=$(mktemp -d); trap 'rm -rf "$R"' EXIT
mkdir -p "$R/bin" "$R/proc" "$R/sys" "$R/dev" "$R/run" "$R/tmp"
cp /bin/busybox "$R/bin/"; ln -s busybox "$R/bin/sh"
cp "$ROOT/e2e/init" "$R/init"; chmod +x "$R/init"
cp "$B/edu_dma" "$B/edu_vfio" "$R/"
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
VARIANTS=${E2E_VARIANTS:-a b}
rc=0
for v in $VARIANTS; do
  case $v in
    a) machine=(-machine pc); words=""; pass="E2E-DMA-ALL: PASS" ;;
    b) machine=(-machine q35 -device intel-iommu,intremap=on); words="intel_iommu=on E2E_MODE=vfio"
       pass="E2E-VFIO-ALL: PASS" ;;
    *) echo "e2e.sh: unknown variant $v" >&2; exit 2 ;;
  esac
  LOG=$B/guest-$v.log
  s=$(date +%s.%N)
  qrc=0
  timeout "$TMO" qemu-system-x86_64 -accel tcg "${machine[@]}" -m "$MEM" -smp 1 \
      -display none -serial stdio -monitor none -no-reboot -nic none \
      -kernel "$VMLINUZ" -initrd "$B/initrd.cpio.gz" \
      -append "console=ttyS0 quiet panic=-1 DMAKIT_LOWMEM_SEARCH_MS=$SEARCH_MS E2E_DMA_MASK=$DMA_MASK $words $APPEND" \
      -device edu,dma_mask=$DMA_MASK </dev/null >"$LOG" 2>&1 || qrc=$?
  qt=$(awk -v a="$(date +%s.%N)" -v b="$s" 'BEGIN{printf "%.1f", a-b}')
  echo "----- guest output, variant $v ($LOG) -----"
  tr -d '\r' < "$LOG"
  echo "----- end of guest output -----"
  if [ $qrc -eq 124 ]; then lap "variant $v: QEMU timed out after ${TMO}s"; fi
  # edu clamps in the negative controls; variant A has none when no page above the mask was
  # handed out (all RAM below a wide mask, or the kernel's layout this run): it says E2E-NO-CLAMP
  if grep -q "$pass" "$LOG" && { grep -q 'EDU: clamping DMA' "$LOG" || grep -q 'E2E-NO-CLAMP' "$LOG"; }; then
    lap "variant $v: PASS (QEMU ${qt}s, mem $MEM)"
  else
    lap "variant $v: FAIL (QEMU exit $qrc after ${qt}s)"
    rc=1
  fi
done
exit $rc
