"""A ZIP archive written front to back, for workbooks: ZIP64 only where the sizes need it.

A member whose size is unknown until its end (the worksheet, streamed while COPY runs) is
written with a data descriptor after its data (general purpose bit 3). Its local header is
the classic one: Office refuses ZIP64 structures in a workbook that does not need them, and
the sizes decide that only at the end. So the data descriptor, the central directory and the
end records switch to their ZIP64 forms exactly when a size or an offset reaches 4 GiB (the
readers that open workbooks read the central directory, where every size is exact).

stream-zip and zipstream-ng commit a member of unknown size to ZIP64 (or to failing past
4 GiB) at its local header, before its size is known; hence this small writer.

Every member has the same fixed time (1980-01-01 00:00, the format's first instant) and the
caller fixes the order, so the same content gives the same bytes.
"""

from __future__ import annotations

import dataclasses
import struct
import zlib

# 1980-01-01 00:00:00 in MS-DOS date and time fields.
_DOS_DATE = (0 << 9) | (1 << 5) | 1
_DOS_TIME = 0
_DEFLATED = 8
_DESCRIPTOR_FLAG = 0x08
_VERSION = 20  # deflate
_VERSION_ZIP64 = 45
_ZIP64_EXTRA = 0x0001
# A field holding this value says "see the ZIP64 record"; a real value must be smaller.
LIMIT_32 = 0xFFFFFFFF
LIMIT_16 = 0xFFFF


@dataclasses.dataclass
class _Member:
    name: bytes
    offset: int
    flags: int
    crc: int = 0
    compressed: int = 0
    size: int = 0


class ZipWriter:
    """Produces the bytes of one archive, piece by piece: `member()` for a small part known
    whole, `begin()` / `feed()` / `end()` for a streamed one, then `finish()`.

    `limit` is where 32-bit fields stop (only tests lower it, to reach the ZIP64 forms
    without writing gigabytes).
    """

    def __init__(self, *, level: int, limit: int = LIMIT_32) -> None:
        self.level = level
        self.limit = limit
        self.offset = 0
        self.members: list[_Member] = []
        self._open: _Member | None = None
        self._deflate: zlib._Compress | None = None

    def _out(self, data: bytes) -> bytes:
        self.offset += len(data)
        return data

    def _compressor(self) -> zlib._Compress:
        return zlib.compressobj(self.level, zlib.DEFLATED, -zlib.MAX_WBITS)

    def _local_header(self, member: _Member) -> bytes:
        return struct.pack(
            "<IHHHHHIIIHH",
            0x04034B50,
            _VERSION,
            member.flags,
            _DEFLATED,
            _DOS_TIME,
            _DOS_DATE,
            member.crc,
            member.compressed,
            member.size,
            len(member.name),
            0,
        )

    def member(self, name: str, data: bytes) -> bytes:
        """A whole member, sizes in its local header (a small part: under 4 GiB)."""
        assert self._open is None
        deflate = self._compressor()
        body = deflate.compress(data) + deflate.flush()
        member = _Member(
            name.encode("ascii"),
            self.offset,
            0,
            zlib.crc32(data),
            len(body),
            len(data),
        )
        assert member.size < self.limit
        assert member.compressed < self.limit
        self.members.append(member)
        return self._out(self._local_header(member) + member.name + body)

    def begin(self, name: str) -> bytes:
        """Opens a streamed member: its local header, sizes to follow in a data descriptor."""
        assert self._open is None
        self._open = _Member(name.encode("ascii"), self.offset, _DESCRIPTOR_FLAG)
        self._deflate = self._compressor()
        return self._out(self._local_header(self._open) + self._open.name)

    def feed(self, data: bytes) -> bytes:
        """Compresses the next piece of the open member; returns what is ready to write.

        zlib releases the GIL while it compresses, so this may run in a worker thread."""
        member, deflate = self._open, self._deflate
        assert member is not None
        assert deflate is not None
        member.crc = zlib.crc32(data, member.crc)
        member.size += len(data)
        out = deflate.compress(data)
        member.compressed += len(out)
        return self._out(out)

    def end(self) -> bytes:
        """Closes the open member: the rest of its data and its data descriptor."""
        member, deflate = self._open, self._deflate
        assert member is not None
        assert deflate is not None
        tail = deflate.flush()
        member.compressed += len(tail)
        if member.size >= self.limit or member.compressed >= self.limit:
            descriptor = struct.pack(
                "<IIQQ", 0x08074B50, member.crc, member.compressed, member.size
            )
        else:
            descriptor = struct.pack(
                "<IIII", 0x08074B50, member.crc, member.compressed, member.size
            )
        self.members.append(member)
        self._open = self._deflate = None
        return self._out(tail + descriptor)

    def _central_header(self, member: _Member) -> bytes:
        extra = b""
        size, compressed, offset = member.size, member.compressed, member.offset
        # The ZIP64 extra holds, in this order, only the fields that do not fit.
        if size >= self.limit:
            extra += struct.pack("<Q", size)
            size = LIMIT_32
        if compressed >= self.limit:
            extra += struct.pack("<Q", compressed)
            compressed = LIMIT_32
        if offset >= self.limit:
            extra += struct.pack("<Q", offset)
            offset = LIMIT_32
        if extra:
            extra = struct.pack("<HH", _ZIP64_EXTRA, len(extra)) + extra
        version = _VERSION_ZIP64 if extra else _VERSION
        return (
            struct.pack(
                "<IHHHHHHIIIHHHHHII",
                0x02014B50,
                version,
                version,
                member.flags,
                _DEFLATED,
                _DOS_TIME,
                _DOS_DATE,
                member.crc,
                compressed,
                size,
                len(member.name),
                len(extra),
                0,
                0,
                0,
                0,
                offset,
            )
            + member.name
            + extra
        )

    def finish(self) -> bytes:
        """The central directory and the end records."""
        assert self._open is None
        start = self.offset
        directory = b"".join(self._central_header(m) for m in self.members)
        end = start + len(directory)
        count = len(self.members)
        records = b""
        if count >= LIMIT_16 or len(directory) >= self.limit or start >= self.limit:
            records = struct.pack(
                "<IQHHIIQQQQ",
                0x06064B50,
                44,
                _VERSION_ZIP64,
                _VERSION_ZIP64,
                0,
                0,
                count,
                count,
                len(directory),
                start,
            ) + struct.pack("<IIQI", 0x07064B50, 0, end, 1)
            count16, size32, start32 = LIMIT_16, LIMIT_32, LIMIT_32
        else:
            count16, size32, start32 = count, len(directory), start
        records += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count16, count16, size32, start32, 0)
        return self._out(directory + records)
