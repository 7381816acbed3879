"""The host side of the agent protocol: one request frame, one reply frame.

:class:`AgentClient` knows frames, not SSH: it runs over any stream from
``streams.py``.  Every wait has a deadline; a stream that ends or stays
silent past it raises :class:`AgentLost`, after which the connection is not
used again.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass

from conformance.driver.platform import PlatformError
from guest_agent import protocol as p

#: How much shell noise may come before the agent's greeting.
MAX_NOISE = 64 << 10


class AgentLost(PlatformError):
    """The agent stopped answering or its stream ended; the connection is gone."""


class AgentRequestError(PlatformError):
    """The agent refused a request; ``code`` is one of ``protocol.ERROR_CODES``."""

    def __init__(self, code: str, message: str):
        self.code = code
        super().__init__(message)


@dataclass
class PollExpired:
    """A batch stopped at a poll: its index, the value read last, the results before it."""

    index: int
    last_value: int
    results: list


class AgentClient:
    def __init__(self, stream, timeout: float = 10.0):
        self.stream = stream
        self.timeout = timeout
        self.buf = bytearray()
        self.hello: dict = {}
        self.round_trips = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        self.lost: str | None = None

    # --- stream -----------------------------------------------------------------------
    def _fill(self, n: int, deadline: float, what: str) -> None:
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._lose(f"the agent did not answer {what} in time")
            try:
                chunk = self.stream.recv(max(1 << 16, n - len(self.buf)), left)
            except TimeoutError:
                continue
            if not chunk:
                raise self._lose(f"the agent's stream ended while waiting for {what}")
            self.buf += chunk
            self.bytes_received += len(chunk)

    def _lose(self, why: str) -> AgentLost:
        self.lost = why
        return AgentLost(why)

    def start(self, timeout: float) -> dict:
        """Skip to the agent's MAGIC, read its HELLO; return the facts it sent."""
        deadline = time.monotonic() + timeout
        while p.MAGIC not in self.buf:
            if len(self.buf) > MAX_NOISE:
                raise self._lose("no agent greeting in the first 64 KiB of output")
            self._fill(len(self.buf) + 1, deadline, "its greeting")
        del self.buf[:self.buf.index(p.MAGIC) + len(p.MAGIC)]
        kind, payload = self._read_frame(deadline, "its greeting")
        if kind != p.HELLO:
            raise self._lose(f"the agent greeted with frame kind {kind}, not HELLO")
        self.hello = p.parse_json(payload)
        if self.hello.get("version") != p.VERSION:
            raise self._lose(f"agent protocol version {self.hello.get('version')}, host speaks "
                             f"{p.VERSION}")
        return self.hello

    def _read_frame(self, deadline: float, what: str) -> tuple[int, bytes]:
        self._fill(p.FRAME.size, deadline, what)
        length, kind = p.FRAME.unpack_from(self.buf, 0)
        if not 1 <= length <= p.MAX_FRAME:
            raise self._lose(f"the agent sent a frame of length {length}")
        self._fill(4 + length, deadline, what)
        payload = bytes(self.buf[p.FRAME.size:4 + length])
        del self.buf[:4 + length]
        return kind, payload

    def exchange(self, data: bytes, timeout: float | None = None,
                 what: str = "a request") -> tuple[int, bytes]:
        """Send one frame, return the reply frame (kind, payload)."""
        if self.lost:
            raise AgentLost(f"the agent connection is gone ({self.lost})")
        try:
            self.stream.send(data)
        except ConnectionError as exc:
            raise self._lose(str(exc)) from None
        self.bytes_sent += len(data)
        self.round_trips += 1
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        return self._read_frame(deadline, what)

    # --- requests -------------------------------------------------------------------------
    def control(self, kind: int, obj: dict | None = None, timeout: float | None = None,
                what: str = "a request") -> dict:
        rkind, payload = self.exchange(p.json_frame(kind, obj or {}), timeout, what)
        return self._check(rkind, payload, p.OK)

    def _check(self, rkind: int, payload: bytes, want: int):
        if rkind == p.ERROR:
            err = p.parse_json(payload)
            raise AgentRequestError(str(err.get("code")), str(err.get("message")))
        if rkind != want:
            raise self._lose(f"unexpected reply kind {rkind}")
        return p.parse_json(payload) if want == p.OK else payload

    def alloc(self, size: int, align: int) -> int:
        rkind, payload = self.exchange(p.frame(p.ALLOC, p.ALLOC_REQ.pack(size, align)),
                                       what="dma_alloc")
        if rkind == p.ERROR:
            self._check(rkind, payload, p.OK)
        if rkind != p.OK or len(payload) != 8:
            raise self._lose(f"unexpected ALLOC reply (kind {rkind}, {len(payload)} bytes)")
        return p.U64.unpack(payload)[0]

    def batch(self, ops: list[tuple], timeout: float, compress: bool = False,
              compress_reply: bool = False) -> list | PollExpired:
        """Run ``ops``; their results, or :class:`PollExpired` when a poll timed out."""
        data = p.encode_batch(ops, compress, compress_reply)
        rkind, payload = self.exchange(data, timeout, f"a batch of {len(ops)} ops")
        if rkind in (p.RESULTS_ZLIB, p.POLL_TIMEOUT_ZLIB):
            payload = zlib.decompress(payload)
            rkind = p.RESULTS if rkind == p.RESULTS_ZLIB else p.POLL_TIMEOUT
        if rkind == p.RESULTS:
            return p.decode_results(ops, payload)
        if rkind == p.POLL_TIMEOUT:
            index, last = p.TIMEOUT_HEAD.unpack_from(payload, 0)
            results = p.decode_results(ops, payload[p.TIMEOUT_HEAD.size:], index)
            return PollExpired(index, last, results)
        self._check(rkind, payload, p.RESULTS)
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.stream.close()
