#!/usr/bin/env python3
"""fuzz/gen_corpus.py: writes the seed corpus fuzz/corpus/* for fuzz_bmd. Each seed follows the
byte layout LLVMFuzzerTestOneInput reads (big-endian fields): factory, task, options, size,
alignment, mask, contiguous, [constraints], then method calls. Re-run to regenerate."""
import os, struct, sys

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
os.makedirs(out, exist_ok=True)

def u8(v): return struct.pack(">B", v & 0xff)
def u16(v): return struct.pack(">H", v & 0xffff)
def u32(v): return struct.pack(">I", v & 0xffffffff)
def u64(v): return struct.pack(">Q", v & 0xffffffffffffffff)

def opts(v): return u8(1) + u32(v)                       # any 32-bit value
def size_page(): return u8(7)
def size_small(n): return u8(1) + u8(n - 1)
def size_u16(n): return u8(2) + u16(n)
def size_pages(k, extra=0): return u8(3) + u8(k - 1) + (u8(1) + u16(extra) if extra else u8(0))
def size_u32(n): return u8(4) + u32(n)
def size_zero(): return u8(0)
def size_huge(k): return u8(5) + u16(k)
def size_2_62(x): return u8(6) + u64(x)
def align(v): return u8(3) + u64(v)
def mask(v): return u8(3) + u64(v)
NOMASK = u8(0)

def create(factory, task_null, o, size, al=align(1), mk=NOMASK, contig=0, cons=b""):
    return u8(factory) + u8(task_null) + opts(o) + size + al + mk + u8(contig) + cons

# method calls
def setLength(n): return u8(0) + u8(0) + u32(n)
def append(n, null=False): return u8(1) + u8(1 if null else 0) + u32(n)
def append_huge(): return u8(1) + u8(0x80) + u8(3)
def range_(s, n): return u8(2) + u8(0) + u32(s) + u8(0) + u32(n)
def read(off, n): return u8(3) + u8(0) + u32(off) + u8(0) + u32(n)
def write(off, n, null=False): return u8(4) + u8(1 if null else 0) + u32(off) + u32(n)
def prepare(d=0): return u8(5) + u8(d)
def complete(d=0): return u8(6) + u8(d)
def phys(off): return u8(7) + u8(0) + u32(off) + u8(0)
def perform(k, off, n): return u8(8) + u8(k) + u32(off) + u32(n)
def purge(st): return u8(9) + u8(st)
def map_(o): return u8(10) + u8(0) + u32(o)
def cmit(sel, o, off, n): return u8(11) + u8(sel) + u32(o) + u32(off) + u32(n)
def mapop(i, what): return u8(13) + u8(i) + u8(what)
def setdir(d): return u8(15) + u8(d)
def poke(o, n): return u8(16) + u32(o) + u16(n)
def contents(): return u8(17)
def physall(): return u8(18)

KT, NT = 0, 1
IWO, IWPM, WO, WC, WB, AI, IWC = range(7)
P = 4096
seeds = {
  "kernel_basic": create(IWO, KT, 3, size_pages(4)) + write(10, 100) + read(0, 200) + contents() + physall(),
  "kernel_out_only": create(IWO, KT, 2, size_u16(5000)) + write(0, 10) + poke(0, 64) + contents() + prepare(1) + complete() + complete() + prepare(3) + write(0, 8),
  "null_task_wired": create(IWO, NT, 3, size_pages(2)) + range_(0, 1) + write(1, 2000) + map_(0) + mapop(0, 2) + contents(),
  "pageable_kernel": create(IWO, KT, 0x23, size_pages(3)) + read(0, 1) + prepare() + write(5, 300) + physall() + complete() + read(0, 1) + contents(),
  "pageable_null": create(IWO, NT, 0x20, size_u32(70000)) + prepare(2) + write(0, 10) + prepare(1) + complete() + complete() + contents(),
  "purgeable": create(IWO, KT, 0x63, size_pages(2)) + prepare() + write(0, 4096) + complete() + purge(3) + purge(4) + contents() + purge(9) + purge(1),
  "purgeable_wired_empty": create(IWO, NT, 0x63, size_pages(1)) + prepare() + write(0, 100) + purge(4) + complete() + contents() + purge(4) + contents(),
  "mask32": create(IWPM, KT, 3, size_pages(2), mk=mask(0xFFFFFFFF)) + physall(),
  "mask36": create(IWPM, KT, 3, size_pages(8), mk=mask(0xFFFFFFFFF)) + physall(),
  "mask64k": create(IWPM, KT, 3, size_pages(1), mk=mask(0xFFFF0000)),
  "mask_top": create(IWPM, NT, 0x20, size_small(100), mk=mask(0x8000000000000000)) + prepare() + physall(),
  "with_options_align": create(WO, KT, 0, size_u16(3000), al=align(64)) + range_(0, 3000) + range_(3000, 0),
  "with_options_bigalign": create(WO, KT, 0, size_pages(2), al=align(2 * P)),
  "with_options_hugealign": create(WO, KT, 0, size_small(10), al=align(0x8000000000000001)),
  "with_capacity_contig_small": create(WC, KT, 3, size_u16(1000), contig=1) + physall(),
  "with_capacity_contig_big": create(WC, KT, 3, size_pages(3), contig=1),
  "with_capacity_plain": create(WC, KT, 1, size_u32(1 << 20)) + append(10) + setLength(0) + append(5000) + append_huge() + contents(),
  "with_bytes": create(WB, KT, 3, size_u16(777)) + contents() + read(0, 777) + setLength(10) + append(1000, null=True) + contents(),
  "with_bytes_contig": create(WB, KT, 2, size_pages(1, 10), contig=1),
  "alloc_init_mask_and_align": create(AI, KT, 3, size_pages(2), al=align(P), mk=mask(0xFFFFF)),
  "alloc_init_null": create(AI, NT, 0x20, size_pages(1)) + map_(0x1000) + mapop(0, 2),
  "constraints_window": create(IWC, KT, 3, size_pages(2), cons=u8(1) + mask(0xFFFFFFFFFF)) + physall(),
  "constraints_contig": create(IWC, KT, 3, size_pages(2), cons=u8(64)),
  "constraints_bad": create(IWC, KT, 3, size_pages(2), cons=u8(4) + align(3)),
  "constraints_segments": create(IWC, NT, 3, size_pages(4), cons=u8(32 + 16) + u32(P) + u8(4)) + physall(),
  "zero_cap": create(IWO, KT, 3, size_zero()),
  "huge_cap": create(IWO, KT, 3, size_huge(5)),
  "huge_cap_pageable": create(IWO, NT, 0x20, size_2_62(0x123456789)),
  "huge_withbytes": create(WB, KT, 3, size_huge(0)),
  "maps_mixed": create(IWO, KT, 3, size_pages(4)) + map_(0) + map_(0) + cmit(0, 1, 100, 200) + cmit(1 | (2 << 3), 0, P, P) + cmit(3 << 3, 0, P, P) + mapop(2, 3) + mapop(1, 1) + mapop(1, 1) + mapop(3, 2) + contents() + cmit(0, 0x04000001, 0, 0) + cmit(0, 0x02000001 | 0x1000, 0, 0),
  "maps_guarded": create(IWO, NT, 0, size_pages(2)) + cmit(0, 0x40000001, 0, 0) + cmit(0, 0x80000001, 0, 100) + cmit(2 << 3, 0x40000000, 0, 0) + mapop(0, 3) + contents(),
  "maps_readonly": create(IWO, KT, 3, size_pages(2)) + map_(0x1000) + cmit(0, 0x1001, 0, 10) + cmit(0, 0x1301, 0, 10) + mapop(1, 2) + mapop(0, 0),
  "maps_range": create(IWO, KT, 3, size_pages(2)) + cmit(0, 1, 2 * P, 0) + cmit(0, 1, 0, 2 * P + 1) + setLength(0) + map_(0) + cmit(0, 1, 0, 0),
  "perform_ops": create(IWO, KT, 3, size_pages(2)) + perform(0, 0, 100) + perform(1, 0, 3 * P) + perform(2, 2 * P, 0) + perform(4, 0, 1) + perform(0, 9000, 5) + perform(3, 0, 0),
  "setdirection": create(IWO, KT, 2, size_pages(1)) + setdir(3) + write(0, 10) + setdir(0x80) + complete() + prepare(2) + write(0, 1) + complete() + prepare(1) + write(0, 1),
  "cache_modes": create(IWO, KT, 0x903, size_small(64)) + map_(0) + map_(0x100) + create(0, 0, 0, b""),
  "phys_offsets": create(IWO, KT, 3, size_pages(8, 100)) + phys(0) + phys(P + 5) + phys(8 * P + 99) + phys(8 * P + 100) + setLength(P) + phys(P) + physall(),
}
for name, data in seeds.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
print(f"{len(seeds)} seeds in {out}")
