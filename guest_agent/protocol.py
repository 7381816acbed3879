"""The agent protocol, version 1: length-prefixed binary frames over a byte stream.

Both ends use this module: the host side (``conformance.targets.ssh``) and the
agent inside the guest, so it imports nothing but the standard library.

Why binary and not JSON lines: a batch is mostly small fixed-layout records
(addresses, sizes, register values) and raw memory contents.  JSON would need
base64 for every buffer and a parser per op; measured on the wraparound
batch (benchmarks/bench_ssh.py, "codec"), decoding binary ops costs a fraction
of decoding the same ops as JSON inside a TCG guest, and the frames are about
half the size.  Control messages (hello, select, errors) are rare and carry
free-form facts, so their payload is JSON inside a binary frame.

Frame:   u32 length (of what follows) | u8 kind | payload
Stream:  the agent first writes ``MAGIC``, then a HELLO frame; the host
         skips anything before ``MAGIC`` (a login shell may print noise).
         After that every host frame gets exactly one reply frame.

Batch payload: u8 flags | ops.  ``FLAG_ZLIB`` means the ops are zlib-compressed;
``FLAG_ZLIB_REPLY`` asks for a compressed reply (the reply then has kind
``RESULTS_ZLIB`` / ``POLL_TIMEOUT_ZLIB``).  Each op is a u8 code and fixed
fields (below), a ``MEM_WRITE`` followed by its bytes.

Results, in op order: config/BAR reads and polls give u64, a ``MEM_READ``
gives its n bytes, writes give nothing.  A poll that times out ends the batch:
the reply is POLL_TIMEOUT with u32 index, u64 last value, then the results of
the ops before it.
"""

from __future__ import annotations

import json
import struct
import zlib

VERSION = 1
MAGIC = b"\x00VBLK-AGENT\x00"

FRAME = struct.Struct("<IB")
MAX_FRAME = 256 << 20

# host -> agent
SELECT = ord("S")  # JSON {"pci": BDF | null, "serial": str | null}
ALLOC = ord("A")  # <QQ size, align
BATCH = ord("B")  # u8 flags, ops
REPROBE = ord("R")  # JSON {"rebind": bool}: quiesce the device (and cycle the kernel driver)
INFO = ord("I")  # no payload
BYE = ord("X")  # give the device back and exit

# agent -> host
HELLO = ord("H")  # JSON facts about the agent and the guest
OK = ord("K")  # JSON (control requests) or <Q (ALLOC)
RESULTS = ord("r")
RESULTS_ZLIB = ord("z")
POLL_TIMEOUT = ord("t")
POLL_TIMEOUT_ZLIB = ord("y")
ERROR = ord("E")  # JSON {"code": str, "message": str}

FLAG_ZLIB = 1
FLAG_ZLIB_REPLY = 2

# op codes and their fixed fields (after the code byte)
OP_CFG_READ = 1  # off u16, size u8
OP_CFG_WRITE = 2  # off u16, size u8, value u32
OP_BAR_READ = 3  # bar u8, off u32, size u8
OP_BAR_WRITE = 4  # bar u8, off u32, size u8, value u64
OP_MEM_READ = 5  # addr u64, n u32
OP_MEM_WRITE = 6  # addr u64, n u32, then n bytes
OP_POLL = 7  # addr u64, size u8, mask u64, value u64, equal u8, timeout f64

OP_STRUCTS = {
    OP_CFG_READ: struct.Struct("<BHB"),
    OP_CFG_WRITE: struct.Struct("<BHBI"),
    OP_BAR_READ: struct.Struct("<BBIB"),
    OP_BAR_WRITE: struct.Struct("<BBIBQ"),
    OP_MEM_READ: struct.Struct("<BQI"),
    OP_MEM_WRITE: struct.Struct("<BQI"),
    OP_POLL: struct.Struct("<BQBQQBd"),
}
U64 = struct.Struct("<Q")
ALLOC_REQ = struct.Struct("<QQ")
TIMEOUT_HEAD = struct.Struct("<IQ")

#: Error codes the agent sends; the host turns each into one clear line.
ERROR_CODES = (
    "not-root", "no-hugepages", "not-found", "in-use", "ambiguous", "refused",
    "bad-request", "bad-op", "not-selected", "dma", "sysfs", "internal",
)


class ProtocolError(Exception):
    """A frame or payload that does not follow this protocol."""


def frame(kind: int, payload: bytes = b"") -> bytes:
    if len(payload) + 1 > MAX_FRAME:
        raise ProtocolError(f"frame of {len(payload) + 1} bytes exceeds {MAX_FRAME}")
    return FRAME.pack(len(payload) + 1, kind) + payload


def json_frame(kind: int, obj) -> bytes:
    return frame(kind, json.dumps(obj, separators=(",", ":")).encode())


def parse_json(payload: bytes):
    try:
        return json.loads(bytes(payload).decode())
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"payload is not JSON: {exc}") from None


# --- ops ---------------------------------------------------------------------------


def encode_op(op: tuple) -> bytes:
    """One op tuple ``(code, fields...)`` (``MEM_WRITE``: ``(code, addr, data)``)."""
    code = op[0]
    if code == OP_MEM_WRITE:
        data = op[2]
        return OP_STRUCTS[OP_MEM_WRITE].pack(code, op[1], len(data)) + bytes(data)
    try:
        return OP_STRUCTS[code].pack(*op)
    except KeyError:
        raise ProtocolError(f"unknown op code {code}") from None
    except struct.error as exc:
        raise ProtocolError(f"op {op!r} does not fit its fields: {exc}") from None


def encode_batch(ops: list[tuple], compress: bool = False, compress_reply: bool = False,
                 level: int = 1) -> bytes:
    """The BATCH frame for ``ops``."""
    body = b"".join(encode_op(op) for op in ops)
    flags = FLAG_ZLIB_REPLY if compress_reply else 0
    if compress:
        body = zlib.compress(body, level)
        flags |= FLAG_ZLIB
    return frame(BATCH, bytes([flags]) + body)


def result_layout(ops: list[tuple]) -> list[int]:
    """Bytes each op contributes to the results: 8, n or 0."""
    out = []
    for op in ops:
        code = op[0]
        if code in (OP_CFG_READ, OP_BAR_READ, OP_POLL):
            out.append(8)
        elif code == OP_MEM_READ:
            out.append(op[2])
        else:
            out.append(0)
    return out


def decode_results(ops: list[tuple], data: bytes, count: int | None = None) -> list:
    """Split a results payload into one value per op (the first ``count`` ops)."""
    ops = ops if count is None else ops[:count]
    out: list = []
    pos = 0
    view = memoryview(data)
    for op in ops:
        code = op[0]
        if code in (OP_CFG_READ, OP_BAR_READ, OP_POLL):
            if pos + 8 > len(data):
                raise ProtocolError(f"results end after {len(out)} of {len(ops)} ops")
            out.append(U64.unpack_from(data, pos)[0])
            pos += 8
        elif code == OP_MEM_READ:
            n = op[2]
            if pos + n > len(data):
                raise ProtocolError(f"results end after {len(out)} of {len(ops)} ops")
            out.append(bytes(view[pos:pos + n]))
            pos += n
        else:
            out.append(None)
    if pos != len(data):
        raise ProtocolError(f"{len(data) - pos} bytes of results left over after {len(ops)} ops")
    return out
