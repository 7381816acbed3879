"""Block requests (5.2.6 Device Operation) executed on a backing file.

``BlkEngine.execute`` takes one buffer as the chain walker returned it (readable
elements first) and does the request the 16-byte header asks for.  It makes no
assumption about how the driver split header, data and status over descriptors
(2.7.4.1 Device Requirements: Message Framing): the header is the first 16
readable bytes, data is what follows, the status is the last writable byte.
It writes the status byte and returns the used length: the number of bytes it
wrote into the device-writable part (2.7.8.2).
"""

from __future__ import annotations

import os
import struct
import tempfile
from pathlib import Path

from conformance import spec

from .chain import ChainError, Segments
from .config import ConfigError, DeviceConfig
from .memory import GuestMemory

_HDR = struct.Struct("<IIQ")  # le32 type, le32 reserved, le64 sector
_SEG = struct.Struct("<QII")  # le64 sector, le32 num_sectors, le32 flags
_LIFETIME = struct.Struct("<HHH")
_LIFETIME_BE = struct.Struct(">HHH")  # only for the lifetime-big-endian defect
_U64 = (1 << 64) - 1
S = spec.SECTOR_SIZE
_UNMAP = spec.VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP
_KNOWN_TYPES = frozenset(spec.REQUEST_TYPE_NAMES)
_IOV_MAX = 1024
_ZERO_CHUNK = bytes(1 << 20)
_ZERO_VIEW = memoryview(_ZERO_CHUNK)

OK = spec.VIRTIO_BLK_S_OK
IOERR = spec.VIRTIO_BLK_S_IOERR
UNSUPP = spec.VIRTIO_BLK_S_UNSUPP


class BackingFile:
    """The disk image: a caller's file, or a zero-filled temporary file we own."""

    def __init__(self, cfg: DeviceConfig, read_only: bool):
        self.owned = cfg.backing_file is None
        if self.owned:
            fd, name = tempfile.mkstemp(prefix="refdev-", suffix=".img")
            self.path = Path(name)
            os.ftruncate(fd, cfg.capacity_bytes)  # sparse, reads back as zeros
        else:
            self.path = Path(cfg.backing_file)
            # The ro-check-out-only defect opens the image read-write whatever RO says.
            writable = not read_only or cfg.has_defect("ro-check-out-only")
            flags = os.O_RDWR if writable else os.O_RDONLY
            try:
                fd = os.open(self.path, flags)
            except OSError as e:
                raise ConfigError(f"{cfg.where}: backing_file: cannot open {self.path}: "
                                  f"{e.strerror}") from None
        self.fd = fd

    def grow_to(self, nbytes: int) -> None:
        """Make the file at least ``nbytes`` long (never shrinks a caller's data)."""
        try:
            if os.fstat(self.fd).st_size < nbytes:
                os.ftruncate(self.fd, nbytes)
        except OSError:
            pass  # a read-only caller file: reads past its end return zeros anyway

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
            if self.owned:
                self.path.unlink(missing_ok=True)


def _window(segs: Segments, skip: int, take: int) -> Segments:
    """The part ``[skip, skip + take)`` of the byte stream the segments describe."""
    out: Segments = []
    for off, length in segs:
        if take <= 0:
            break
        if skip >= length:
            skip -= length
            continue
        n = min(length - skip, take)
        out.append((off + skip, n))
        take -= n
        skip = 0
    return out


class BlkEngine:
    """Executes virtio-blk requests; knows the negotiated features and the disk."""

    def __init__(self, cfg: DeviceConfig, backing: BackingFile):
        self.cfg = cfg
        self.backing = backing
        self.fd = backing.fd
        self.capacity = cfg.capacity_sectors
        offered = cfg.offered_features()
        self.offered = offered
        self.read_only = bool(offered >> spec.VIRTIO_BLK_F_RO & 1)
        serial = cfg.serial.encode("ascii")
        pad = b" " if cfg.has_defect("get-id-not-nul-padded") else b"\0"
        if cfg.has_defect("get-id-truncates-full-serial"):
            serial = serial[:spec.VIRTIO_BLK_ID_BYTES - 1]  # room kept for a terminator
        self.id_bytes = serial.ljust(spec.VIRTIO_BLK_ID_BYTES, pad)
        typ_a, typ_b = cfg.lifetime_typ_a, cfg.lifetime_typ_b
        if cfg.has_defect("lifetime-estimate-unclamped"):
            # estimate = used/10 + 1 without a cap: "exceeded" (11) comes out as 12
            top = spec.VIRTIO_BLK_LIFETIME_EST_MAX
            typ_a, typ_b = (v + 1 if v == top else v for v in (typ_a, typ_b))
        packer = _LIFETIME_BE if cfg.has_defect("lifetime-big-endian") else _LIFETIME
        self.lifetime = packer.pack(cfg.pre_eol_info, typ_a, typ_b)
        self.d_wrong_sector = cfg.has_defect("in-reads-wrong-sector")
        self.d_flush_unsupp = cfg.has_defect("flush-unsupported")
        self.d_len_header = cfg.has_defect("used-len-includes-header")
        self.d_no_status = cfg.has_defect("status-not-written")
        self.d_header_from_writable = cfg.has_defect("header-from-writable")
        self.d_status_readable = cfg.has_defect("status-into-readable-tail")
        self.d_status_at_start = cfg.has_defect("status-at-descriptor-start")
        self.d_seg_max_all = cfg.has_defect("seg-max-counts-header-status")
        self.d_size_max_excl = cfg.has_defect("size-max-exclusive")
        self.d_type_low_bit = cfg.has_defect("type-low-bit-as-direction")
        self.d_unknown_ioerr = cfg.has_defect("unknown-type-ioerr")
        self.d_partial_ok = cfg.has_defect("partial-sector-io-accepted")
        self.d_start_only = cfg.has_defect("capacity-check-start-only")
        self.d_byte_wrap = cfg.has_defect("byte-offset-wraps")
        self.d_data_after_first = cfg.has_defect("out-data-after-first-descriptor")
        self.d_first_data_only = cfg.has_defect("out-first-data-descriptor-only")
        self.d_ro_unsupp = cfg.has_defect("ro-out-unsupp")
        self.d_ro_out_only = cfg.has_defect("ro-check-out-only")
        self.d_discard_unmap = cfg.has_defect("discard-unmap-accepted")
        self.d_flags_ignored = cfg.has_defect("segment-reserved-flags-ignored")
        self.d_limits_excl = cfg.has_defect("segment-limits-exclusive")
        self.d_sector_limit_ignored = cfg.has_defect("segment-sector-limit-ignored")
        self.d_discard_widen = cfg.has_defect("discard-rounds-to-alignment")
        self.d_wz_unmap_noop = cfg.has_defect("write-zeroes-unmap-noop")
        self.d_wz_first_only = cfg.has_defect("write-zeroes-first-segment-only")
        # A volatile write cache exists only to show two defects: FLUSH leaving it
        # alone, and writes cached although they must already be stable (5.2.6.2).
        self.d_flush_leaves = cfg.has_defect("flush-leaves-cache")
        self.d_cache_always = cfg.has_defect("write-cache-ignores-mode")
        self.cache: dict[int, bytes] = {}  # sector -> 512 bytes not yet on the backing file
        self.set_negotiated(0, cfg.writeback)

    def set_negotiated(self, features: int, writeback: int) -> None:
        """Recompute what the driver may use after feature negotiation or a writeback change."""
        def has(bit: int) -> bool:
            return bool(features >> bit & 1)

        self.flush_ok = has(spec.VIRTIO_BLK_F_FLUSH)
        self.lifetime_ok = has(spec.VIRTIO_BLK_F_LIFETIME)
        self.discard_ok = has(spec.VIRTIO_BLK_F_DISCARD)
        self.write_zeroes_ok = has(spec.VIRTIO_BLK_F_WRITE_ZEROES)
        self.secure_erase_ok = has(spec.VIRTIO_BLK_F_SECURE_ERASE)
        # 5.2.6.2: a completed write must already be stable (so we sync after it)
        # when neither CONFIG_WCE nor FLUSH was negotiated although FLUSH was offered,
        # or when CONFIG_WCE was negotiated and writeback is 0 (writethrough).
        wce = has(spec.VIRTIO_BLK_F_CONFIG_WCE)
        flush_offered = bool(self.offered >> spec.VIRTIO_BLK_F_FLUSH & 1)
        self.writethrough = (wce and writeback == 0) or (
            not wce and not self.flush_ok and flush_offered)

    # ----------------------------------------------------------------- request
    def execute(self, mem: GuestMemory, segs: Segments, nread: int) -> int:
        """Carry out one request; write its status byte; return the used length.

        Raises ChainError when the buffer cannot even hold a header and a status
        byte: there is then no way to answer, so the device needs a reset.
        """
        buf = mem.buf
        if not nread and self.d_header_from_writable and len(segs) > 1:
            nread = len(segs) - 1  # direction ignored: all but the last are "driver data"
        off0, len0 = segs[0] if nread else (0, 0)
        if nread and len0 >= 16:
            rtype, _reserved, sector = _HDR.unpack_from(buf, off0)
        else:
            hdr = b"".join(bytes(buf[o:o + n]) for o, n in _window(segs[:nread], 0, 16))
            if len(hdr) < 16:
                raise ChainError(f"request has {len(hdr)} device-readable bytes, less than "
                                 f"the 16-byte header", "5.2.6 Device Operation")
            rtype, _reserved, sector = _HDR.unpack(hdr)
        wsegs = segs[nread:]
        wtotal = 0
        for _o, n in wsegs:
            wtotal += n
        if wtotal == 0:
            if self.d_status_readable:
                o, n = next((o, n) for o, n in reversed(segs) if n)
                buf[o + n - 1] = UNSUPP
                return 0
            raise ChainError("request has no device-writable byte for the status",
                             "5.2.6 Device Operation")
        status_off = -1
        for o, n in reversed(wsegs):
            if n:
                status_off = o if self.d_status_at_start else o + n - 1
                break
        data_in = wtotal - 1
        if self.d_seg_max_all and len(segs) > self.cfg.seg_max or \
                self.d_size_max_excl and any(n >= self.cfg.size_max for _o, n in segs):
            buf[status_off] = IOERR
            return self._used(1)
        if self.d_type_low_bit and rtype & 1 and rtype not in _KNOWN_TYPES:
            rtype &= ~1  # as if bit 0 were VIRTIO_BLK_T_OUT's direction flag

        written = 0  # data bytes written at the start of the writable part
        if rtype == spec.VIRTIO_BLK_T_IN:
            status, written = self._read(mem, wsegs, data_in, sector)
        elif rtype == spec.VIRTIO_BLK_T_OUT:
            status = self._write(mem, segs, nread, sector)
            if self.d_no_status:
                return self._used(1)  # claims the status byte it did not write
        elif rtype == spec.VIRTIO_BLK_T_FLUSH:
            status = self._flush()
        elif rtype == spec.VIRTIO_BLK_T_GET_ID:
            written = min(data_in, spec.VIRTIO_BLK_ID_BYTES)
            self._put(buf, wsegs, self.id_bytes[:written])
            status = OK
        elif rtype == spec.VIRTIO_BLK_T_GET_LIFETIME:
            if not self.lifetime_ok:
                status = UNSUPP
            elif data_in < spec.BLK_LIFETIME_SIZE:
                status = IOERR
            else:
                self._put(buf, wsegs, self.lifetime)
                written = spec.BLK_LIFETIME_SIZE
                status = OK
        elif rtype in (spec.VIRTIO_BLK_T_DISCARD, spec.VIRTIO_BLK_T_WRITE_ZEROES,
                       spec.VIRTIO_BLK_T_SECURE_ERASE):
            status = self._ranges(buf, rtype, segs, nread)
        else:
            # unknown (or legacy-only) request type
            status = IOERR if self.d_unknown_ioerr else UNSUPP
        buf[status_off] = status
        return self._used(written + 1)

    def _used(self, n: int) -> int:
        return n + 16 if self.d_len_header else n

    @staticmethod
    def _put(buf: bytearray, wsegs: Segments, data: bytes, skip: int = 0) -> None:
        pos = 0
        for o, n in _window(wsegs, skip, len(data)):
            buf[o:o + n] = data[pos:pos + n]
            pos += n

    def _read(self, mem: GuestMemory, wsegs: Segments, nbytes: int, sector: int
              ) -> tuple[int, int]:
        if nbytes % spec.SECTOR_SIZE and not self.d_partial_ok:
            return IOERR, 0  # 5.2.6.1: data length must be a multiple of 512
        pos = self._offset(sector, nbytes)
        if pos is None:
            return IOERR, 0  # beyond capacity: nothing is transferred
        if self.d_wrong_sector:
            sector += 1
            pos += spec.SECTOR_SIZE
        view = mem.view
        if len(wsegs) == 1 or wsegs[0][1] >= nbytes:  # data in one element: the common case
            o = wsegs[0][0]
            parts = [view[o:o + nbytes]]
        else:
            parts = [view[o:o + n] for o, n in _window(wsegs, 0, nbytes)]
        try:
            if len(parts) <= _IOV_MAX:
                got = os.preadv(self.fd, parts, pos)
                if got < nbytes:  # past the end of a short file: zeros
                    _zero_tail(parts, got)
            else:
                for i in range(0, len(parts), _IOV_MAX):
                    chunk = parts[i:i + _IOV_MAX]
                    want = sum(len(p) for p in chunk)
                    got = os.preadv(self.fd, chunk, pos)
                    if got < want:
                        _zero_tail(chunk, got)
                    pos += want
        except OSError:
            return IOERR, 0
        if self.cache:
            for i in range(nbytes // S):
                cached = self.cache.get(sector + i)
                if cached is not None:
                    self._put(mem.buf, wsegs, cached, i * S)
        return OK, nbytes

    def _offset(self, sector: int, nbytes: int) -> int | None:
        """Byte offset of an IN/OUT transfer, or None when it does not fit the disk."""
        if self.d_byte_wrap:  # C arithmetic on a 64-bit byte offset
            pos = sector * S & _U64
            return pos if (pos + nbytes) & _U64 <= self.capacity * S else None
        if self.d_start_only:
            return sector * S if sector <= self.capacity else None
        if sector + nbytes // S > self.capacity:
            return None
        return sector * S

    def _write(self, mem: GuestMemory, segs: Segments, nread: int, sector: int) -> int:
        rtotal = 0
        for _o, n in segs[:nread]:
            rtotal += n
        nbytes = rtotal - spec.BLK_REQ_HEADER_SIZE
        if self.read_only:
            # 5.2.6.2: write request with VIRTIO_BLK_F_RO offered
            return UNSUPP if self.d_ro_unsupp else IOERR
        if nbytes % spec.SECTOR_SIZE and not self.d_partial_ok:
            return IOERR
        pos = self._offset(sector, nbytes)
        if pos is None:
            return IOERR
        view = mem.view
        if self.d_data_after_first:  # the header is assumed to fill descriptor 0
            parts = [view[o:o + n] for o, n in segs[1:nread]]
        elif nread == 1:
            o, n = segs[0]
            parts = [view[o + 16:o + n]] if n > 16 else []
        elif nread == 2 and segs[0][1] == 16:  # header, data: the common case
            o, n = segs[1]
            parts = [view[o:o + n]]
        else:
            parts = [view[o:o + n] for o, n in _window(segs[:nread], 16, nbytes)]
        if self.d_first_data_only:
            parts = parts[:1]
        if self.d_cache_always or self.d_flush_leaves and not self.writethrough:
            data = b"".join(bytes(p) for p in parts)
            for i in range(len(data) // S):
                self.cache[sector + i] = data[i * S:(i + 1) * S]
            return OK
        try:
            for i in range(0, len(parts), _IOV_MAX):
                chunk = parts[i:i + _IOV_MAX] if len(parts) > _IOV_MAX else parts
                _pwrite_all(self.fd, chunk, pos)
                pos += sum(len(p) for p in chunk)
            if self.writethrough and nbytes:
                os.fdatasync(self.fd)
        except OSError:
            return IOERR
        return OK

    def _flush(self) -> int:
        if not self.flush_ok or self.d_flush_unsupp:
            return UNSUPP
        try:
            if not self.d_flush_leaves:
                for sector, data in sorted(self.cache.items()):
                    os.pwrite(self.fd, data, sector * S)
                self.cache.clear()
            os.fdatasync(self.fd)
        except OSError:
            return IOERR
        return OK

    def _ranges(self, buf: bytearray, rtype: int, segs: Segments, nread: int) -> int:
        """DISCARD, WRITE_ZEROES and SECURE_ERASE: a list of 16-byte segments."""
        cfg = self.cfg
        if rtype == spec.VIRTIO_BLK_T_DISCARD:
            supported, max_seg, max_sectors = (self.discard_ok, cfg.max_discard_seg,
                                               cfg.max_discard_sectors)
        elif rtype == spec.VIRTIO_BLK_T_WRITE_ZEROES:
            supported, max_seg, max_sectors = (self.write_zeroes_ok, cfg.max_write_zeroes_seg,
                                               cfg.max_write_zeroes_sectors)
        else:
            supported, max_seg, max_sectors = (self.secure_erase_ok, cfg.max_secure_erase_seg,
                                               cfg.max_secure_erase_sectors)
        if not supported:
            return UNSUPP
        raw = b"".join(bytes(buf[o:o + n]) for o, n in _window(segs[:nread], 16, 1 << 62))
        if not raw or len(raw) % spec.BLK_SEGMENT_SIZE:
            return IOERR  # 5.2.6.1: data is a non-empty multiple of the segment size
        ranges = [_SEG.unpack_from(raw, i) for i in range(0, len(raw), spec.BLK_SEGMENT_SIZE)]
        # The spec leaves the status for too many segments open (5.2.6.1 makes it a
        # driver error); we answer UNSUPP like QEMU does for more than it supports.
        excl = self.d_limits_excl  # the defect: limits treated as exclusive
        if len(ranges) > max_seg or excl and len(ranges) >= max_seg:
            return UNSUPP
        is_wz = rtype == spec.VIRTIO_BLK_T_WRITE_ZEROES
        unmap_ok = is_wz or self.d_discard_unmap and rtype == spec.VIRTIO_BLK_T_DISCARD
        for _sector, _num, flags in ranges:
            # 5.2.6.2: unknown flags -> UNSUPP; unmap on a discard -> UNSUPP.  The unmap
            # bit is defined for write zeroes only, so secure erase treats it as unknown.
            if flags & spec.VIRTIO_BLK_SEGMENT_FLAG_RESERVED_MASK and not self.d_flags_ignored:
                return UNSUPP
            if flags & _UNMAP and not unmap_ok:
                return UNSUPP
        if self.read_only and not self.d_ro_out_only:
            return IOERR
        for sector, num, _flags in ranges:
            over = num > max_sectors and not self.d_sector_limit_ignored
            if over or excl and num >= max_sectors or sector + num > self.capacity:
                return IOERR
        if is_wz and self.d_wz_first_only:
            ranges = ranges[:1]
        try:
            for sector, num, flags in ranges:
                if is_wz and self.d_wz_unmap_noop and flags & _UNMAP:
                    continue
                if self.d_discard_widen and rtype == spec.VIRTIO_BLK_T_DISCARD:
                    sector, num = _widen(sector, num, cfg.discard_sector_alignment,
                                         self.capacity)
                for s in [s for s in self.cache if sector <= s < sector + num]:
                    del self.cache[s]
                _zero_range(self.fd, sector * spec.SECTOR_SIZE, num * spec.SECTOR_SIZE)
            if rtype == spec.VIRTIO_BLK_T_SECURE_ERASE or self.writethrough:
                os.fdatasync(self.fd)
        except OSError:
            return IOERR
        return OK


def _widen(sector: int, num: int, align: int, capacity: int) -> tuple[int, int]:
    """The range grown to whole ``align``-sector blocks (discard-rounds-to-alignment)."""
    align = max(align, 1)
    start = sector - sector % align
    end = min(-(-(sector + num) // align) * align, capacity)
    return start, end - start


def _zero_tail(parts: list[memoryview], got: int) -> None:
    for p in parts:
        n = len(p)
        if got >= n:
            got -= n
            continue
        p[got:] = bytes(n - got)
        got = 0


def _pwrite_all(fd: int, parts: list[memoryview], pos: int) -> None:
    done = os.pwritev(fd, parts, pos)
    want = len(parts[0]) if len(parts) == 1 else sum(len(p) for p in parts)
    if done == want:
        return
    # a short write: finish it piece by piece
    for p in parts:
        n = len(p)
        if done >= n:
            done -= n
            pos += n
            continue
        p = p[done:]
        pos += done
        done = 0
        while len(p):
            k = os.pwrite(fd, p, pos)
            p = p[k:]
            pos += k


def _zero_range(fd: int, pos: int, n: int) -> None:
    while n > 0:
        k = min(n, len(_ZERO_CHUNK))
        os.pwrite(fd, _ZERO_VIEW[:k], pos)
        pos += k
        n -= k
