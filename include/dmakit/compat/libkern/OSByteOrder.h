/* libkern/OSByteOrder.h (dmakit C++ layer): libkern's byte-order helpers, which DMA descriptor
 * code uses to write the little- or big-endian words a device reads (OSSwapHostToLittleInt32,
 * OSReadLittleInt64 ...): the OSSwap*, OSRead*, OSWrite* functions and OSHostByteOrder(), with
 * Apple's names and meaning, over the compiler's byte swaps (the reads and writes are volatile
 * accesses of naturally aligned words, as in Apple's). DriverKit's <DriverKit/IOLib.h>
 * has them too. */
#ifndef DMAKIT_COMPAT_LIBKERN_OSBYTEORDER_H
#define DMAKIT_COMPAT_LIBKERN_OSBYTEORDER_H

#include <cstdint>

enum { OSUnknownByteOrder = 0, OSLittleEndian = 1, OSBigEndian = 2 };

inline int32_t OSHostByteOrder() { return __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ ? OSLittleEndian : OSBigEndian; }

constexpr uint16_t OSSwapInt16(uint16_t x) { return __builtin_bswap16(x); }
constexpr uint32_t OSSwapInt32(uint32_t x) { return __builtin_bswap32(x); }
constexpr uint64_t OSSwapInt64(uint64_t x) { return __builtin_bswap64(x); }

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define DK_OSSWAP_LE(bits, x) (x)
#define DK_OSSWAP_BE(bits, x) OSSwapInt##bits(x)
#else
#define DK_OSSWAP_LE(bits, x) OSSwapInt##bits(x)
#define DK_OSSWAP_BE(bits, x) (x)
#endif

#define DK_OSBYTEORDER_WIDTH(bits)                                                                  \
  constexpr uint##bits##_t OSSwapHostToLittleInt##bits(uint##bits##_t x) { return DK_OSSWAP_LE(bits, x); } \
  constexpr uint##bits##_t OSSwapLittleToHostInt##bits(uint##bits##_t x) { return DK_OSSWAP_LE(bits, x); } \
  constexpr uint##bits##_t OSSwapHostToBigInt##bits(uint##bits##_t x) { return DK_OSSWAP_BE(bits, x); }    \
  constexpr uint##bits##_t OSSwapBigToHostInt##bits(uint##bits##_t x) { return DK_OSSWAP_BE(bits, x); }    \
  inline uint##bits##_t OSReadLittleInt##bits(const volatile void *base, uintptr_t byteOffset)            \
  {                                                                                                        \
    uint##bits##_t v = *(const volatile uint##bits##_t *)((uintptr_t)base + byteOffset);                  \
    return DK_OSSWAP_LE(bits, v);                                                                          \
  }                                                                                                        \
  inline uint##bits##_t OSReadBigInt##bits(const volatile void *base, uintptr_t byteOffset)               \
  {                                                                                                        \
    uint##bits##_t v = *(const volatile uint##bits##_t *)((uintptr_t)base + byteOffset);                  \
    return DK_OSSWAP_BE(bits, v);                                                                          \
  }                                                                                                        \
  inline void OSWriteLittleInt##bits(volatile void *base, uintptr_t byteOffset, uint##bits##_t data)      \
  {                                                                                                        \
    *(volatile uint##bits##_t *)((uintptr_t)base + byteOffset) = DK_OSSWAP_LE(bits, data);                 \
  }                                                                                                        \
  inline void OSWriteBigInt##bits(volatile void *base, uintptr_t byteOffset, uint##bits##_t data)         \
  {                                                                                                        \
    *(volatile uint##bits##_t *)((uintptr_t)base + byteOffset) = DK_OSSWAP_BE(bits, data);                 \
  }

DK_OSBYTEORDER_WIDTH(16)
DK_OSBYTEORDER_WIDTH(32)
DK_OSBYTEORDER_WIDTH(64)

#undef DK_OSBYTEORDER_WIDTH
#undef DK_OSSWAP_LE
#undef DK_OSSWAP_BE

#endif
