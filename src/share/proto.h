/* src/share/proto.h: the wire format between a driver and its clients. One message is one
 * SOCK_SEQPACKET record: a 16-byte header and a fixed-size body for its type, little-endian
 * host order (both ends are on this machine). Only a MAP message carries a descriptor (the
 * memfd, SCM_RIGHTS). dk__proto_check is the single gate every received record passes: a
 * pure function, fuzzed (fuzz/fuzz_proto.c). */
#ifndef DK_SHARE_PROTO_H
#define DK_SHARE_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DK_PROTO_MAGIC   0x31534b44u   /* "DKS1" */
#define DK_PROTO_VERSION 1u
#define DK_PROTO_TEXT    200           /* bytes of text in a RESULT, NUL-terminated */

typedef enum dk_msg_type {
  /* driver -> client */
  DK_MSG_WELCOME = 1,     /* admitted: access rights and the connection's id */
  DK_MSG_RESULT  = 2,     /* the answer to a request (its seq), a refused record (the seq it
                             carried, if it had a header), or a refusal at connect (seq 0) */
  DK_MSG_MAP     = 3,     /* map this memfd (one SCM_RIGHTS descriptor); seq of the request or 0 */
  DK_MSG_UNMAP   = 4,     /* the driver took mapping `id` back */
  DK_MSG_BYE     = 5,     /* the driver is going away or cut this client off */
  /* client -> driver */
  DK_MSG_MAP_REQ   = 16,  /* IOConnectMapMemory64: memory type and options */
  DK_MSG_UNMAP_REQ = 17,  /* give mapping `id` back */
  DK_MSG_MAP_ACK   = 18,  /* mapping `id` is at `address` in the client (or failed: code) */
} dk_msg_type;

typedef struct dk_msg_hdr {
  uint32_t magic;
  uint16_t version;
  uint16_t type;
  uint32_t size;          /* header + body, bytes */
  uint32_t seq;           /* request number chosen by the client; 0 for unsolicited */
} dk_msg_hdr;

typedef struct dk_msg_welcome { uint32_t access; uint32_t page_size; uint64_t client_id; } dk_msg_welcome;
typedef struct dk_msg_result {
  int32_t  code;          /* IOReturn */
  uint32_t constraint;    /* dk_constraint_kind */
  char     text[DK_PROTO_TEXT];
} dk_msg_result;
typedef struct dk_msg_map {
  uint64_t id;
  uint64_t file_offset;   /* page-aligned offset in the memfd */
  uint64_t span;          /* bytes to map from there, a page multiple */
  uint64_t in_page;       /* the range starts this far into the mapping */
  uint64_t length;        /* bytes of the range */
  uint32_t writable;      /* 1: map read-write (the descriptor is O_RDWR) */
  uint32_t tag;           /* the descriptor's getTag() */
  uint32_t type;          /* memory type of the request, 0 when pushed */
  uint32_t populate;      /* kIOMapPrefault: populate at map time */
} dk_msg_map;
typedef struct dk_msg_id { uint64_t id; } dk_msg_id;          /* UNMAP, UNMAP_REQ */
typedef struct dk_msg_bye { int32_t code; uint32_t pad; char text[DK_PROTO_TEXT]; } dk_msg_bye;
typedef struct dk_msg_map_req { uint32_t type; uint32_t options; } dk_msg_map_req;
typedef struct dk_msg_map_ack { uint64_t id; uint64_t address; int32_t code; uint32_t pad; } dk_msg_map_ack;

typedef struct dk_msg {
  dk_msg_hdr hdr;
  union {
    dk_msg_welcome welcome;
    dk_msg_result  result;
    dk_msg_map     map;
    dk_msg_id      id;
    dk_msg_bye     bye;
    dk_msg_map_req map_req;
    dk_msg_map_ack map_ack;
  } u;
} dk_msg;

/* Which end sends a type. */
typedef enum dk_proto_dir { DK_PROTO_TO_CLIENT, DK_PROTO_TO_DRIVER } dk_proto_dir;

/* Body size of a type, or -1 for a type that does not exist. */
int dk__proto_body_size(uint16_t type);
/* A header for `type` with `seq` (size filled from the type). */
void dk__proto_init(dk_msg *m, dk_msg_type type, uint32_t seq);
/* Validate a received record of `n` bytes that came with `nfds` descriptors, travelling in
 * direction `dir`: magic, version, a known type for that direction, the exact size, a
 * descriptor exactly when the type carries one, and the body's own rules (NUL-terminated
 * text, page-multiple spans, no overflow). 0 when valid; else -1 with a reason in `why`. */
int dk__proto_check(const void *buf, size_t n, int nfds, dk_proto_dir dir, size_t page_size,
                    char *why, size_t cap);

#endif
