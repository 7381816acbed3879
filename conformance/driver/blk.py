"""The virtio-blk driver: configuration layout and requests (5.2 Block Device).

A :class:`BlkRequest` says what to send and how to lay it out in descriptors;
:meth:`BlkDevice.submit` places a burst of requests, notifies once and collects
the completions, in as few Platform round trips as the ring allows.  Nothing
is asserted here: completions carry the raw facts (status byte, used length,
data, whether guard bytes around the buffers survived) and the cases judge.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from conformance import spec
from conformance.driver.device import (
    DRIVER_TRANSPORT_FEATURES,
    FeatureNotOffered,
    VirtioPciDevice,
)
from conformance.driver.platform import MemRead, MemWrite, Op, Platform, PollTimeout
from conformance.driver.split import DeferredUse, SplitQueue
from conformance.driver.virtqueue import Buffer, QueueTimeout, UsedElem, Virtqueue

#: Block features this driver understands (5.2.3); legacy and zoned bits are left out.
DRIVER_BLK_FEATURES = sum(1 << b for b in (
    spec.VIRTIO_BLK_F_SIZE_MAX, spec.VIRTIO_BLK_F_SEG_MAX, spec.VIRTIO_BLK_F_GEOMETRY,
    spec.VIRTIO_BLK_F_RO, spec.VIRTIO_BLK_F_BLK_SIZE, spec.VIRTIO_BLK_F_FLUSH,
    spec.VIRTIO_BLK_F_TOPOLOGY, spec.VIRTIO_BLK_F_CONFIG_WCE, spec.VIRTIO_BLK_F_MQ,
    spec.VIRTIO_BLK_F_DISCARD, spec.VIRTIO_BLK_F_WRITE_ZEROES, spec.VIRTIO_BLK_F_LIFETIME,
    spec.VIRTIO_BLK_F_SECURE_ERASE,
))
DRIVER_FEATURES = DRIVER_TRANSPORT_FEATURES | DRIVER_BLK_FEATURES

POISON = 0xA5  # fills device-writable buffers: never a valid status byte
GUARD = b"\xde\xad\xbe\xef" * 4  # 16 bytes before and after every writable buffer
#: Bounds on one batch of bursts in :meth:`BlkDevice.submit`: requests, and bytes
#: of request buffers (the DMA pool must hold them all at once).
BATCH_REQUESTS = 512
BATCH_BYTES = 2 << 20


@dataclass(frozen=True)
class BlkConfig:
    """struct virtio_blk_config (5.2.4), read consistently (2.5.1)."""

    raw: bytes
    generation: int

    def u8(self, off: int) -> int:
        return self.raw[off]

    def u16(self, off: int) -> int:
        return int.from_bytes(self.raw[off:off + 2], "little")

    def u32(self, off: int) -> int:
        return int.from_bytes(self.raw[off:off + 4], "little")

    @property
    def capacity(self) -> int:
        return int.from_bytes(self.raw[0:8], "little")

    @property
    def num_queues(self) -> int:
        return self.u16(spec.BLK_CFG_NUM_QUEUES)


_HEADER = struct.Struct("<IIQ")  # le32 type, le32 reserved, le64 sector


def pack_header(type_: int, sector: int = 0, reserved: int = 0) -> bytes:
    """struct virtio_blk_req's driver-readable header (5.2.6)."""
    return _HEADER.pack(type_, reserved, sector)


def pack_segment(sector: int, num_sectors: int, flags: int = 0) -> bytes:
    """struct virtio_blk_discard_write_zeroes (5.2.6)."""
    return struct.pack("<QII", sector, num_sectors, flags)


@dataclass
class BlkRequest:
    """One request and its descriptor layout.

    The readable part is ``header`` (default: packed from type/sector/reserved)
    followed by ``data``; the writable part is ``read_len`` bytes followed by the
    status byte.  ``readable_split`` / ``writable_split`` give descriptor lengths
    (summing to each part's size); by default header and data get one
    descriptor each, and so do read data and status (the common Linux layout).
    """

    type: int
    sector: int = 0
    data: bytes = b""
    read_len: int = 0
    reserved: int = 0
    header: bytes | None = None
    readable_split: Sequence[int] | None = None
    writable_split: Sequence[int] | None = None
    indirect: bool = False

    @property
    def readable(self) -> bytes:
        head = self.header if self.header is not None else pack_header(
            self.type, self.sector, self.reserved)
        return head + self.data

    @property
    def writable_len(self) -> int:
        return self.read_len + 1

    def buffer_lengths(self) -> tuple[list[int], list[int]]:
        _, r, w = self.layout()
        return r, w

    def layout(self) -> tuple[bytes, list[int], list[int]]:
        """The readable bytes and the descriptor lengths of both parts."""
        if self.header is None and self.readable_split is None and self.writable_split is None:
            # the default layout (nearly every request): nothing to check
            data = self.data
            r = [_HEADER.size, len(data)] if data else [_HEADER.size]
            w = [self.read_len, 1] if self.read_len else [1]
            return _HEADER.pack(self.type, self.reserved, self.sector) + data, r, w
        readable = self.readable
        if self.readable_split is not None:
            r = list(self.readable_split)
        else:
            head_len = len(readable) - len(self.data)
            r = [head_len] + ([len(self.data)] if self.data else [])
        if self.writable_split is not None:
            w = list(self.writable_split)
        else:
            w = ([self.read_len] if self.read_len else []) + [1]
        if sum(r) != len(readable) or sum(w) != self.writable_len:
            raise ValueError(f"descriptor split {r}/{w} does not cover "
                             f"{len(readable)}/{self.writable_len} bytes")
        return readable, r, w


@dataclass
class BlkCompletion:
    """What the device did with one request."""

    request: BlkRequest
    status: int
    used_len: int
    data: bytes
    guards_intact: bool
    id: int = 0
    queue: int = 0

    @property
    def status_name(self) -> str:
        if self.status == POISON:
            return "not written"
        return spec.BLK_STATUS_NAMES.get(self.status, f"{self.status:#x}")


def read_request(sector: int, nbytes: int, **kw) -> BlkRequest:
    return BlkRequest(spec.VIRTIO_BLK_T_IN, sector, read_len=nbytes, **kw)


def write_request(sector: int, data: bytes, **kw) -> BlkRequest:
    return BlkRequest(spec.VIRTIO_BLK_T_OUT, sector, data=bytes(data), **kw)


def flush_request(**kw) -> BlkRequest:
    return BlkRequest(spec.VIRTIO_BLK_T_FLUSH, **kw)


def get_id_request(**kw) -> BlkRequest:
    return BlkRequest(spec.VIRTIO_BLK_T_GET_ID, read_len=spec.VIRTIO_BLK_ID_BYTES, **kw)


def segments_request(type_: int, segments: Sequence[tuple[int, int, int]], **kw) -> BlkRequest:
    """DISCARD / WRITE_ZEROES / SECURE_ERASE with (sector, num_sectors, flags) segments."""
    return BlkRequest(type_, data=b"".join(pack_segment(*s) for s in segments), **kw)


@contextlib.contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Hold off Python's cycle collector while requests are in flight.

    A submission builds a dozen small objects per request and keeps the
    completions; the collector's passes over that growing heap cost about a
    third of the in-process request rate (measured with
    benchmarks/bench_reference.py).  None of these objects form cycles, so
    reference counting frees them all the same; the collector resumes after.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@functools.lru_cache(maxsize=64)
def _poisoned_region(length: int) -> bytes:
    """Guard, ``length`` poison bytes, guard: what a writable buffer holds before the device."""
    return GUARD + bytes([POISON]) * length + GUARD


@dataclass
class _Prepared:
    request: BlkRequest
    readable_addr: int  # also the start of the one pool block holding both parts
    writable_addr: int  # address of the first writable byte (after the front guard)
    buffers: list[Buffer] = field(default_factory=list)
    size: int = 0  # readable plus writable bytes, for the batch's DMA budget


#: What :meth:`BlkDevice.post` hands back for each request: an opaque handle.
PostedRequest = _Prepared


class BlkDevice:
    """A virtio-blk-pci device driven through a Platform."""

    def __init__(self, platform: Platform, timeout: float = 10.0):
        self.virtio = VirtioPciDevice(platform)
        self.platform = platform
        self.timeout = timeout
        self.config: BlkConfig | None = None

    # --- convenience views --------------------------------------------------------
    @property
    def transport(self):
        return self.virtio.transport

    @property
    def queues(self) -> list[Virtqueue]:
        return self.virtio.queues

    @property
    def offered(self) -> int:
        return self.virtio.offered or self.transport.device_features()

    def offers(self, bit: int) -> bool:
        return bool(self.offered >> bit & 1)

    def has(self, bit: int) -> bool:
        return self.virtio.has(bit)

    # --- bring-up -------------------------------------------------------------------
    def init(self, *, require: Sequence[int] = (), exclude: Sequence[int] = (),
             features: int | None = None, num_queues: int = 1, queue_size: int | None = None,
             packed: bool = False, msix: bool = True, driver_ok: bool = True,
             enable_queues: bool = True) -> BlkDevice:
        """Initialize the device the way 3.1.1 describes.

        ``features`` (default: everything offered that this driver implements,
        without RING_PACKED unless ``packed``) minus ``exclude``; every bit in
        ``require`` must be offered or :class:`FeatureNotOffered` is raised.
        """
        offered = self.transport.device_features()
        for bit in list(require) + ([spec.VIRTIO_F_RING_PACKED] if packed else []):
            if not offered >> bit & 1:
                raise FeatureNotOffered(bit)
        if features is None:
            features = offered & DRIVER_FEATURES
            if not packed:
                features &= ~(1 << spec.VIRTIO_F_RING_PACKED)
        for bit in exclude:
            features &= ~(1 << bit)
        self.virtio.negotiate(features)
        if num_queues > 1 and not self.has(spec.VIRTIO_BLK_F_MQ):
            raise FeatureNotOffered(spec.VIRTIO_BLK_F_MQ)
        msix_dev = self.virtio.msix if msix else None
        if msix_dev is not None:
            msix_dev.enable()
            self.transport.common_write(spec.COMMON_MSIX, 2, 0)
        elif self.virtio.msix is not None:
            self.virtio.msix.disable()
        for i in range(num_queues):
            vector = (1 + i) % msix_dev.cap.table_size if msix_dev is not None else None
            self.virtio.setup_queue(i, size=queue_size, packed=packed, vector=vector,
                                    enable=enable_queues)
        if driver_ok:
            self.virtio.driver_ok()
        self.config = self.read_config()
        return self

    def read_config(self, size: int = spec.BLK_CFG_SIZE, retries: int = 16) -> BlkConfig:
        """Read the whole config consistently: 2.5.1, retry while config_generation moves."""
        t = self.transport
        for _ in range(retries):
            before = t.config_generation
            raw = b"".join(t.config_read(off, 4).to_bytes(4, "little") for off in range(0, size, 4))
            if t.config_generation == before:
                return BlkConfig(raw[:size], before)
        raise QueueTimeout(f"config_generation kept changing over {retries} reads (2.5.1)")

    # --- requests -------------------------------------------------------------------
    def _prepare(self, req: BlkRequest, layout: tuple[bytes, list[int], list[int]] | None = None
                 ) -> tuple[_Prepared, list[Op]]:
        """Place one request in DMA memory: one pool block, one write.

        The block holds the readable part, padding to 16 bytes, then the
        writable part between two guards (poisoned, so untouched bytes show).
        """
        readable, r_split, w_split = req.layout() if layout is None else layout
        g = len(GUARD)
        w_total = req.writable_len
        r_len = len(readable)
        gap = -r_len % 16
        block = self.virtio.pool.alloc(r_len + gap + w_total + 2 * g, 16)
        w_addr = block + r_len + gap + g
        fill = readable + bytes(gap) + _poisoned_region(w_total)
        prep = _Prepared(req, block, w_addr, size=r_len + w_total)
        buffers = prep.buffers
        pos = block
        for n in r_split:
            buffers.append(Buffer(pos, n, False))
            pos += n
        pos = w_addr
        for n in w_split:
            buffers.append(Buffer(pos, n, True))
            pos += n
        return prep, [MemWrite(block, fill)]

    def _release(self, prep: _Prepared) -> None:
        self.virtio.pool.free(prep.readable_addr)

    def _complete(self, prep: _Prepared, used: UsedElem, region: bytes,
                  queue: int) -> BlkCompletion:
        g = len(GUARD)
        self._release(prep)
        return BlkCompletion(
            request=prep.request,
            status=region[-g - 1],
            used_len=used.length,
            data=bytes(region[g:-g - 1]),
            guards_intact=region[:g] == GUARD and region[-g:] == GUARD,
            id=used.id,
            queue=queue,
        )

    def _region_op(self, prep: _Prepared) -> MemRead:
        g = len(GUARD)
        return MemRead(prep.writable_addr - g, prep.request.writable_len + 2 * g)

    def _fill_burst(self, todo: list[tuple[int, BlkRequest]], q: Virtqueue, queue: int,
                    ops: list[Op]) -> list[tuple[int, _Prepared]]:
        """Take requests from the end of ``todo`` while the ring has room for them.

        Their fill and add ops are appended to ``ops``; a request that can never
        fit the queue is an error rather than an endless loop.
        """
        burst: list[tuple[int, _Prepared]] = []
        while todo:
            i, req = todo[-1]
            layout = req.layout()
            needed = 1 if req.indirect else len(layout[1]) + len(layout[2])
            if q.num_free() < needed:
                break
            todo.pop()
            prep, fill = self._prepare(req, layout)
            ops += fill
            ops += q.add(prep.buffers, (i, prep), indirect=req.indirect)
            burst.append((i, prep))
        if not burst:
            raise ValueError(f"request {todo[-1][0]} needs more descriptors than queue "
                             f"{queue} has ({q.size})")
        return burst

    def submit(self, requests: Sequence[BlkRequest], queue: int = 0,
               timeout: float | None = None) -> list[BlkCompletion]:
        """Send ``requests`` on ``queue`` in bursts that fit the ring.

        Completions come back in request order.
        """
        timeout = self.timeout if timeout is None else timeout
        q = self.queues[queue]
        with _cyclic_gc_paused():
            if isinstance(q, SplitQueue) and q.in_flight == 0:
                return self._submit_batched(requests, q, queue, timeout)
            return self._submit_bursts(requests, q, queue, timeout)

    def _submit_bursts(self, requests: Sequence[BlkRequest], q: Virtqueue, queue: int,
                       timeout: float) -> list[BlkCompletion]:
        """:meth:`submit` one burst per round trip (any ring, chains may be in flight)."""
        results: list[BlkCompletion | None] = [None] * len(requests)
        todo = list(enumerate(requests))
        todo.reverse()
        while todo:
            ops: list[Op] = []
            burst = self._fill_burst(todo, q, queue, ops)
            ops += q.publish()
            ops += q.kick()
            wait = q.wait_ops(len(burst), timeout)
            first_wait = len(ops)
            ops += wait
            # Reading the buffers in the same round trip is only right when the
            # poll covers every request of the burst.
            whole_burst = q.waits_for_all(len(burst))
            if whole_burst:
                ops += [self._region_op(p) for _, p in burst]
            try:
                res = self.platform.execute(ops)
            except PollTimeout as exc:
                raise q.timeout_error(exc, len(burst)) from None
            used = q.collect(res[first_wait + 1])  # type: ignore[arg-type]
            regions = {}
            if whole_burst:
                for k, (i, _) in enumerate(burst):
                    regions[i] = res[first_wait + len(wait) + k]
            done = {u.token[0]: u for u in used}
            missing = [(i, p) for i, p in burst if i not in done]
            if missing:
                for u in q.wait(len(missing), timeout):
                    done[u.token[0]] = u
                for i, _ in missing:
                    regions.pop(i, None)  # read before the device finished: read again
            need_read = [(i, p) for i, p in burst if i not in regions]
            if need_read:
                got = self.platform.execute([self._region_op(p) for _, p in need_read])
                for (i, _), data in zip(need_read, got):
                    regions[i] = data
            for i, prep in burst:
                results[i] = self._complete(prep, done[i], regions[i], queue)  # type: ignore[arg-type]
        return results  # type: ignore[return-value]

    def _submit_batched(self, requests: Sequence[BlkRequest], q: SplitQueue, queue: int,
                        timeout: float) -> list[BlkCompletion]:
        """:meth:`submit` with many bursts per round trip (split ring, nothing else in flight).

        Each burst is: fill, publish, kick, poll until used.idx covers the whole
        burst, read the used ring and the writable regions.  Once that poll
        holds, the driver's ring state is known without looking (see
        ``SplitQueue.defer_used``), so the next burst can follow in the same
        batch; the used entries are checked when the results are back.  Over
        SSH this turns ~8,000 round trips of the 65,536-request wraparound into
        ~130.  A poll that times out stops the batch there: earlier bursts are
        completed, the queue state goes back to the failed burst for the
        timeout message.
        """
        results: list[BlkCompletion | None] = [None] * len(requests)
        todo = list(enumerate(requests))
        todo.reverse()
        while todo:
            ops: list[Op] = []
            bursts: list[tuple[list[tuple[int, _Prepared]], int, int, DeferredUse]] = []
            planned = planned_bytes = 0
            while todo and planned < BATCH_REQUESTS and planned_bytes < BATCH_BYTES:
                burst = self._fill_burst(todo, q, queue, ops)
                planned_bytes += sum(p.size for _, p in burst)
                ops += q.publish()
                ops += q.kick()
                wait = q.wait_ops(len(burst), timeout)
                bursts.append((burst, len(ops), len(wait), q.defer_used()))
                ops += wait
                ops += [self._region_op(p) for _, p in burst]
                planned += len(burst)
            try:
                res = self.platform.execute(ops)
            except PollTimeout as exc:
                k = max(n for n, b in enumerate(bursts) if b[1] <= exc.index)
                for burst, first, n_wait, d in bursts[:k]:
                    if len(exc.results) >= first + n_wait + len(burst):
                        self._finish_burst(q, queue, burst, first, n_wait, d, exc.results, results)
                    else:
                        for _, prep in burst:
                            self._release(prep)
                burst, _, _, d = bursts[k]
                q.undefer(d, [b[3] for b in bursts[k + 1:]])
                for later, _, _, _ in bursts[k + 1:]:
                    for _, prep in later:
                        self._release(prep)
                raise q.timeout_error(exc, len(burst)) from None
            for burst, first, n_wait, d in bursts:
                self._finish_burst(q, queue, burst, first, n_wait, d, res, results)
        return results  # type: ignore[return-value]

    def _finish_burst(self, q: SplitQueue, queue: int, burst: list[tuple[int, _Prepared]],
                      first: int, n_wait: int, d: DeferredUse, res: list,
                      results: list[BlkCompletion | None]) -> None:
        used = {u.token[0]: u for u in q.collect_deferred(d, res[first + n_wait - 1])}
        for k, (i, prep) in enumerate(burst):
            results[i] = self._complete(prep, used[i], res[first + n_wait + k], queue)

    def submit_one(self, request: BlkRequest, queue: int = 0) -> BlkCompletion:
        return self.submit([request], queue)[0]

    # --- post now, collect later: for cases about what the device must not do yet ----
    def post(self, requests: Sequence[BlkRequest], queue: int = 0, *,
             kick: bool = True) -> list[PostedRequest]:
        """Make ``requests`` available on ``queue`` (and notify unless ``kick`` is False).

        Nothing waits; :meth:`reap` collects the completions later, and
        :meth:`writable_bytes` shows whether the device touched a request meanwhile.
        """
        q = self.queues[queue]
        ops: list[Op] = []
        posted: list[PostedRequest] = []
        for req in requests:
            prep, fill = self._prepare(req)
            ops += fill
            ops += q.add(prep.buffers, (len(posted), prep), indirect=req.indirect)
            posted.append(prep)
        ops += q.publish()
        if kick:
            ops += q.kick()
        self.platform.execute(ops)
        return posted

    def kick(self, queue: int = 0) -> None:
        """An available buffer notification for ``queue`` (2.9), nothing else."""
        self.platform.execute(self.queues[queue].kick())

    def writable_bytes(self, posted: PostedRequest) -> bytes:
        """The device-writable part of a posted request as it is now (all POISON if untouched)."""
        return self.platform.mem_read(posted.writable_addr, posted.request.writable_len)

    def reap(self, posted: Sequence[PostedRequest], queue: int = 0,
             timeout: float | None = None) -> list[BlkCompletion]:
        """Wait until the device used every request of ``posted``; completions in post order.

        ``posted`` must be everything in flight on ``queue``.
        """
        timeout = self.timeout if timeout is None else timeout
        used = {id(u.token[1]): u for u in self.queues[queue].wait(len(posted), timeout)}
        regions = self.platform.execute([self._region_op(p) for p in posted])
        return [self._complete(p, used[id(p)], region, queue)  # type: ignore[arg-type]
                for p, region in zip(posted, regions)]

    # --- plain I/O for cases that need data in place ---------------------------------
    def read(self, sector: int, nbytes: int, queue: int = 0) -> bytes:
        c = self.submit_one(read_request(sector, nbytes), queue)
        if c.status != spec.VIRTIO_BLK_S_OK:
            raise OSError(f"IN of {nbytes} bytes at sector {sector} answered {c.status_name}")
        return c.data

    def write(self, sector: int, data: bytes, queue: int = 0) -> None:
        c = self.submit_one(write_request(sector, data), queue)
        if c.status != spec.VIRTIO_BLK_S_OK:
            raise OSError(f"OUT of {len(data)} bytes at sector {sector} answered {c.status_name}")


def open_device(platform: Platform, **init_kw) -> BlkDevice:
    """Probe and initialize a virtio-blk device on ``platform``."""
    return BlkDevice(platform).init(**init_kw)
