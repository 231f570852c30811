#!/usr/bin/env python3
"""fuzz/gen_corpus_proto.py: writes the seed corpus fuzz/corpus_proto/* for fuzz_proto. Each seed
is the layout LLVMFuzzerTestOneInput reads: one configuration byte (bits 0-1 descriptors, 2-4
page size, 5 short reason buffer, 6 answer MAPs with an error), then records, each a 2-byte
little-endian length (bit 15: send a descriptor along) and the record, which is a message of
src/share/proto.h (little-endian). Re-run to regenerate."""
import os, struct

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus_proto")
os.makedirs(out, exist_ok=True)

MAGIC, VERSION, TEXT = 0x31534B44, 1, 200
WELCOME, RESULT, MAP, UNMAP, BYE = 1, 2, 3, 4, 5
MAP_REQ, UNMAP_REQ, MAP_ACK = 16, 17, 18
kIOMapReadOnly = 0x1000

def msg(type_, seq, body):
    return struct.pack("<IHHII", MAGIC, VERSION, type_, 16 + len(body), seq) + body

def text(s): return s.encode().ljust(TEXT, b"\0")[:TEXT]
def welcome(access=3, page=4096, cid=1): return msg(WELCOME, 0, struct.pack("<IIQ", access, page, cid))
def result(seq, code, s): return msg(RESULT, seq, struct.pack("<iI", code, 0) + text(s))
def map_(seq, id_, off=0, span=4096, in_page=0, length=4096, writable=1, tag=0, type_=1, populate=0):
    return msg(MAP, seq, struct.pack("<QQQQQIIII", id_, off, span, in_page, length, writable, tag, type_, populate))
def unmap(id_): return msg(UNMAP, 0, struct.pack("<Q", id_))
def bye(code, s): return msg(BYE, 0, struct.pack("<iI", code, 0) + text(s))
def map_req(seq, type_, options=0): return msg(MAP_REQ, seq, struct.pack("<II", type_, options))
def unmap_req(seq, id_): return msg(UNMAP_REQ, seq, struct.pack("<Q", id_))
def map_ack(id_, address, code=0): return msg(MAP_ACK, 0, struct.pack("<QQiI", id_, address, code, 0))

def rec(b, fd=False): return struct.pack("<H", len(b) | (0x8000 if fd else 0)) + b
def seed(name, cfg, *records):
    with open(os.path.join(out, name), "wb") as f:
        f.write(bytes([cfg]) + b"".join(records))

# to the driver: what a client sends
seed("map_type1", 0x00, rec(map_req(1, 1)))
seed("map_type1_readonly", 0x00, rec(map_req(1, 1, kIOMapReadOnly)))
seed("map_then_unmap", 0x00, rec(map_req(1, 1)), rec(unmap_req(2, 1)))
seed("map_refused_type", 0x00, rec(map_req(7, 2)))
seed("map_req_seq0", 0x00, rec(map_req(0, 1)))         # a request numbered 0 (leaked its map once)
seed("map_ack_error", 0x40, rec(map_req(1, 1)), rec(map_req(2, 1)))
seed("unmap_never_granted", 0x00, rec(unmap_req(3, 0x1234)))
seed("stray_ack", 0x00, rec(map_ack(99, 0x7f0000001000)))
seed("with_descriptor", 0x00, rec(map_req(1, 1), fd=True))
seed("short_header", 0x00, rec(map_req(1, 1)[:12]))
seed("size_lies", 0x00, rec(map_req(1, 1)[:4] + b"\x10\x00" + map_req(1, 1)[6:]))
# to a client: what the driver sends (exercise the gate; the driver refuses them)
seed("welcome", 0x00, rec(welcome()))
seed("result", 0x00, rec(result(5, -536870206, "refused")))
seed("map_record", 0x01, rec(map_(1, 3, off=8192, span=8192, in_page=16, length=100)))
seed("map_record_64k", 0x14, rec(map_(1, 3, span=65536, length=65536)))
seed("unmap_bye", 0x00, rec(unmap(3)), rec(bye(-536870183, "driver going away")))
