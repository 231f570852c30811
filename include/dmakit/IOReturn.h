/* dmakit/IOReturn.h: IOKit's return codes with their exact values (REFERENCE.md §1.7), and
 * functions that give a code's name and text. The list is one X-macro: DK_IORETURN_LIST. */
#ifndef DMAKIT_IORETURN_H
#define DMAKIT_IORETURN_H

#include <dmakit/IOTypes.h>

#ifdef __cplusplus
extern "C" {
#endif

#define sys_iokit          ((kern_return_t)0xE0000000u)   /* err_system(0x38) */
#define sub_iokit_common   0
#define iokit_common_err(return) ((IOReturn)(0xE0000000u | (unsigned)(return)))

#define KERN_SUCCESS 0

/* X(name, code, text). The text is IOKit's own comment for the code. */
#define DK_IORETURN_LIST(X)                                                        \
  X(kIOReturnSuccess,          0x000, "OK")                                        \
  X(kIOReturnInvalid,          0x001, "should never be seen")                      \
  X(kIOReturnError,            0x2bc, "general error")                             \
  X(kIOReturnNoMemory,         0x2bd, "can't allocate memory")                     \
  X(kIOReturnNoResources,      0x2be, "resource shortage")                         \
  X(kIOReturnIPCError,         0x2bf, "error during IPC")                          \
  X(kIOReturnNoDevice,         0x2c0, "no such device")                            \
  X(kIOReturnNotPrivileged,    0x2c1, "privilege violation")                       \
  X(kIOReturnBadArgument,      0x2c2, "invalid argument")                          \
  X(kIOReturnLockedRead,       0x2c3, "device read locked")                        \
  X(kIOReturnLockedWrite,      0x2c4, "device write locked")                       \
  X(kIOReturnExclusiveAccess,  0x2c5, "exclusive access and device already open")  \
  X(kIOReturnBadMessageID,     0x2c6, "sent/received messages had different msg_id") \
  X(kIOReturnUnsupported,      0x2c7, "unsupported function")                      \
  X(kIOReturnVMError,          0x2c8, "misc. VM failure")                          \
  X(kIOReturnInternalError,    0x2c9, "internal error")                            \
  X(kIOReturnIOError,          0x2ca, "General I/O error")                         \
  X(kIOReturnCannotLock,       0x2cc, "can't acquire lock")                        \
  X(kIOReturnNotOpen,          0x2cd, "device not open")                           \
  X(kIOReturnNotReadable,      0x2ce, "read not supported")                        \
  X(kIOReturnNotWritable,      0x2cf, "write not supported")                       \
  X(kIOReturnNotAligned,       0x2d0, "alignment error")                           \
  X(kIOReturnBadMedia,         0x2d1, "Media Error")                               \
  X(kIOReturnStillOpen,        0x2d2, "device(s) still open")                      \
  X(kIOReturnRLDError,         0x2d3, "rld failure")                               \
  X(kIOReturnDMAError,         0x2d4, "DMA failure")                               \
  X(kIOReturnBusy,             0x2d5, "Device Busy")                               \
  X(kIOReturnTimeout,          0x2d6, "I/O Timeout")                               \
  X(kIOReturnOffline,          0x2d7, "device offline")                            \
  X(kIOReturnNotReady,         0x2d8, "not ready")                                 \
  X(kIOReturnNotAttached,      0x2d9, "device not attached")                       \
  X(kIOReturnNoChannels,       0x2da, "no DMA channels left")                      \
  X(kIOReturnNoSpace,          0x2db, "no space for data")                         \
  X(kIOReturnPortExists,       0x2dd, "port already exists")                       \
  X(kIOReturnCannotWire,       0x2de, "can't wire down physical memory")           \
  X(kIOReturnNoInterrupt,      0x2df, "no interrupt attached")                     \
  X(kIOReturnNoFrames,         0x2e0, "no DMA frames enqueued")                    \
  X(kIOReturnMessageTooLarge,  0x2e1, "oversized msg received on interrupt port")  \
  X(kIOReturnNotPermitted,     0x2e2, "not permitted")                             \
  X(kIOReturnNoPower,          0x2e3, "no power to device")                        \
  X(kIOReturnNoMedia,          0x2e4, "media not present")                         \
  X(kIOReturnUnformattedMedia, 0x2e5, "media not formatted")                       \
  X(kIOReturnUnsupportedMode,  0x2e6, "no such mode")                              \
  X(kIOReturnUnderrun,         0x2e7, "data underrun")                             \
  X(kIOReturnOverrun,          0x2e8, "data overrun")                              \
  X(kIOReturnDeviceError,      0x2e9, "the device is not working properly")        \
  X(kIOReturnNoCompletion,     0x2ea, "a completion routine is required")          \
  X(kIOReturnAborted,          0x2eb, "operation aborted")                         \
  X(kIOReturnNoBandwidth,      0x2ec, "bus bandwidth would be exceeded")           \
  X(kIOReturnNotResponding,    0x2ed, "device not responding")                     \
  X(kIOReturnIsoTooOld,        0x2ee, "isochronous I/O request for distant past")  \
  X(kIOReturnIsoTooNew,        0x2ef, "isochronous I/O request for distant future") \
  X(kIOReturnNotFound,         0x2f0, "data was not found")

#define kIOReturnSuccess          KERN_SUCCESS
#define kIOReturnInvalid          iokit_common_err(0x001)
#define kIOReturnError            iokit_common_err(0x2bc)
#define kIOReturnNoMemory         iokit_common_err(0x2bd)
#define kIOReturnNoResources      iokit_common_err(0x2be)
#define kIOReturnIPCError         iokit_common_err(0x2bf)
#define kIOReturnNoDevice         iokit_common_err(0x2c0)
#define kIOReturnNotPrivileged    iokit_common_err(0x2c1)
#define kIOReturnBadArgument      iokit_common_err(0x2c2)
#define kIOReturnLockedRead       iokit_common_err(0x2c3)
#define kIOReturnLockedWrite      iokit_common_err(0x2c4)
#define kIOReturnExclusiveAccess  iokit_common_err(0x2c5)
#define kIOReturnBadMessageID     iokit_common_err(0x2c6)
#define kIOReturnUnsupported      iokit_common_err(0x2c7)
#define kIOReturnVMError          iokit_common_err(0x2c8)
#define kIOReturnInternalError    iokit_common_err(0x2c9)
#define kIOReturnIOError          iokit_common_err(0x2ca)
#define kIOReturnCannotLock       iokit_common_err(0x2cc)
#define kIOReturnNotOpen          iokit_common_err(0x2cd)
#define kIOReturnNotReadable      iokit_common_err(0x2ce)
#define kIOReturnNotWritable      iokit_common_err(0x2cf)
#define kIOReturnNotAligned       iokit_common_err(0x2d0)
#define kIOReturnBadMedia         iokit_common_err(0x2d1)
#define kIOReturnStillOpen        iokit_common_err(0x2d2)
#define kIOReturnRLDError         iokit_common_err(0x2d3)
#define kIOReturnDMAError         iokit_common_err(0x2d4)
#define kIOReturnBusy             iokit_common_err(0x2d5)
#define kIOReturnTimeout          iokit_common_err(0x2d6)
#define kIOReturnOffline          iokit_common_err(0x2d7)
#define kIOReturnNotReady         iokit_common_err(0x2d8)
#define kIOReturnNotAttached      iokit_common_err(0x2d9)
#define kIOReturnNoChannels       iokit_common_err(0x2da)
#define kIOReturnNoSpace          iokit_common_err(0x2db)
#define kIOReturnPortExists       iokit_common_err(0x2dd)
#define kIOReturnCannotWire       iokit_common_err(0x2de)
#define kIOReturnNoInterrupt      iokit_common_err(0x2df)
#define kIOReturnNoFrames         iokit_common_err(0x2e0)
#define kIOReturnMessageTooLarge  iokit_common_err(0x2e1)
#define kIOReturnNotPermitted     iokit_common_err(0x2e2)
#define kIOReturnNoPower          iokit_common_err(0x2e3)
#define kIOReturnNoMedia          iokit_common_err(0x2e4)
#define kIOReturnUnformattedMedia iokit_common_err(0x2e5)
#define kIOReturnUnsupportedMode  iokit_common_err(0x2e6)
#define kIOReturnUnderrun         iokit_common_err(0x2e7)
#define kIOReturnOverrun          iokit_common_err(0x2e8)
#define kIOReturnDeviceError      iokit_common_err(0x2e9)
#define kIOReturnNoCompletion     iokit_common_err(0x2ea)
#define kIOReturnAborted          iokit_common_err(0x2eb)
#define kIOReturnNoBandwidth      iokit_common_err(0x2ec)
#define kIOReturnNotResponding    iokit_common_err(0x2ed)
#define kIOReturnIsoTooOld        iokit_common_err(0x2ee)
#define kIOReturnIsoTooNew        iokit_common_err(0x2ef)
#define kIOReturnNotFound         iokit_common_err(0x2f0)

/* "kIOReturnNoMemory"; "kIOReturnUnknown" for a code not in the list. Never NULL. */
DK_API const char *dk_ioreturn_name(IOReturn code);
/* IOKit's text for the code ("can't allocate memory"); "unknown IOReturn code" otherwise. */
DK_API const char *dk_ioreturn_string(IOReturn code);

#ifdef __cplusplus
}
#endif
#endif
