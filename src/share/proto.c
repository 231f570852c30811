/* src/share/proto.c: the wire format's sizes and its one validity check (see proto.h). Pure:
 * no system calls, no allocation. */
#include "share/proto.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int dk__proto_body_size(uint16_t type)
{
  switch (type) {
  case DK_MSG_WELCOME:   return (int)sizeof(dk_msg_welcome);
  case DK_MSG_RESULT:    return (int)sizeof(dk_msg_result);
  case DK_MSG_MAP:       return (int)sizeof(dk_msg_map);
  case DK_MSG_UNMAP:     return (int)sizeof(dk_msg_id);
  case DK_MSG_BYE:       return (int)sizeof(dk_msg_bye);
  case DK_MSG_MAP_REQ:   return (int)sizeof(dk_msg_map_req);
  case DK_MSG_UNMAP_REQ: return (int)sizeof(dk_msg_id);
  case DK_MSG_MAP_ACK:   return (int)sizeof(dk_msg_map_ack);
  default:               return -1;
  }
}

void dk__proto_init(dk_msg *m, dk_msg_type type, uint32_t seq)
{
  memset(m, 0, sizeof *m);
  m->hdr.magic = DK_PROTO_MAGIC;
  m->hdr.version = DK_PROTO_VERSION;
  m->hdr.type = (uint16_t)type;
  m->hdr.size = (uint32_t)(sizeof m->hdr + (size_t)dk__proto_body_size((uint16_t)type));
  m->hdr.seq = seq;
}

static int bad(char *why, size_t cap, const char *fmt, ...)
{
  if (why && cap) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, cap, fmt, ap);
    va_end(ap);
  }
  return -1;
}

static bool terminated(const char *text) { return memchr(text, '\0', DK_PROTO_TEXT) != NULL; }

int dk__proto_check(const void *buf, size_t n, int nfds, dk_proto_dir dir, size_t page_size,
                    char *why, size_t cap)
{
  dk_msg m;
  if (n < sizeof m.hdr) return bad(why, cap, "a record of %zu bytes is shorter than the %zu-byte header", n, sizeof m.hdr);
  if (n > sizeof m) return bad(why, cap, "a record of %zu bytes is longer than any message (%zu)", n, sizeof m);
  memcpy(&m, buf, n);
  if (m.hdr.magic != DK_PROTO_MAGIC) return bad(why, cap, "bad magic 0x%08x", m.hdr.magic);
  if (m.hdr.version != DK_PROTO_VERSION)
    return bad(why, cap, "protocol version %u, this end speaks %u", m.hdr.version, DK_PROTO_VERSION);
  int body = dk__proto_body_size(m.hdr.type);
  bool to_driver = m.hdr.type >= DK_MSG_MAP_REQ;
  if (body < 0 || to_driver != (dir == DK_PROTO_TO_DRIVER))
    return bad(why, cap, "message type %u is not one this end receives", m.hdr.type);
  if (m.hdr.size != n || n != sizeof m.hdr + (size_t)body)
    return bad(why, cap, "message type %u: %zu bytes received, header says %u, the type has %zu",
               m.hdr.type, n, m.hdr.size, sizeof m.hdr + (size_t)body);
  int want_fds = m.hdr.type == DK_MSG_MAP ? 1 : 0;
  if (nfds != want_fds)
    return bad(why, cap, "message type %u came with %d descriptors, it carries %d", m.hdr.type, nfds, want_fds);
  if ((m.hdr.type == DK_MSG_MAP_REQ || m.hdr.type == DK_MSG_UNMAP_REQ) && m.hdr.seq == 0)
    return bad(why, cap, "a request needs a nonzero number (0 marks unsolicited messages)");
  switch (m.hdr.type) {
  case DK_MSG_RESULT:
    if (!terminated(m.u.result.text)) return bad(why, cap, "result text is not terminated");
    break;
  case DK_MSG_BYE:
    if (!terminated(m.u.bye.text)) return bad(why, cap, "goodbye text is not terminated");
    break;
  case DK_MSG_WELCOME:
    if (m.u.welcome.access != 1 && m.u.welcome.access != 3)
      return bad(why, cap, "welcome with access %u", m.u.welcome.access);
    break;
  case DK_MSG_MAP: {
    const dk_msg_map *p = &m.u.map;
    uint64_t pg = page_size ? page_size : 4096;
    if (!p->id) return bad(why, cap, "map with id 0");
    if (!p->span || p->span % pg || p->file_offset % pg)
      return bad(why, cap, "map span 0x%llx at 0x%llx is not whole pages", (unsigned long long)p->span,
                 (unsigned long long)p->file_offset);
    if (p->file_offset + p->span < p->file_offset || p->file_offset + p->span > (1ull << 62))
      return bad(why, cap, "map range overflows");
    if (!p->length || p->in_page >= pg || p->in_page + p->length < p->length || p->in_page + p->length > p->span)
      return bad(why, cap, "map range 0x%llx+0x%llx does not fit its span 0x%llx", (unsigned long long)p->in_page,
                 (unsigned long long)p->length, (unsigned long long)p->span);
    if (p->writable > 1 || p->populate > 1) return bad(why, cap, "map flags out of range");
    break;
  }
  case DK_MSG_UNMAP:
  case DK_MSG_UNMAP_REQ:
    if (!m.u.id.id) return bad(why, cap, "mapping id 0");
    break;
  case DK_MSG_MAP_ACK:
    if (!m.u.map_ack.id) return bad(why, cap, "mapping id 0");
    if (m.u.map_ack.code == 0 && !m.u.map_ack.address) return bad(why, cap, "a successful map at address 0");
    break;
  default:
    break;
  }
  return 0;
}
