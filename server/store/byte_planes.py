"""Columns of unsigned integers stored as byte planes (byte k of every value together), each plane in the
cheapest of three forms — what keeps a chunk of a hundred points small, where a zstd frame per chunk costs more
than the data (a 100-byte plane of one repeated byte takes 17 bytes as a frame; its random bytes gain nothing):

* constant: one byte;
* bit-packed: the plane minus its smallest byte, in as many bits as the largest difference needs (a ~50 ms step
  time with 2 ms of jitter: ~5 bits a point);
* zstd: a plane that compresses better than it packs (runs, skewed bytes of long chunks), as its own frame (one
  frame for several planes would share one literal table between random and skewed bytes: larger).

Only the low planes up to the column's largest value are kept (a column of small deltas is one plane). Layout of
a column: planes count (1 byte), then per plane a kind byte — 0 constant (+ the byte), 1 packed (+ lowest byte,
bits 1..8, the packed bits), 2 zstd (+ the frame's length as uint32, the frame). The reader checks every length,
so a damaged body raises ValueError naming what is wrong.
"""

from __future__ import annotations

import struct
import threading

import numpy as np
import zstandard

_CONST, _PACKED, _ZSTD = 0, 1, 2
_ZSTD_LEVEL = 3
_LENGTH = struct.Struct("<I")
_codecs = threading.local()


def compress(data: bytes) -> bytes:
    # zstandard's (de)compressor objects must not be shared between threads (two requests decoding at once read
    # each other's state: "Data corruption detected"), so each thread gets its own
    if not hasattr(_codecs, "compressor"):
        _codecs.compressor = zstandard.ZstdCompressor(level=_ZSTD_LEVEL)
    return _codecs.compressor.compress(data)  # type: ignore[no-any-return]


def decompress(blob: bytes | memoryview) -> bytes:
    if not hasattr(_codecs, "decompressor"):
        _codecs.decompressor = zstandard.ZstdDecompressor()
    return _codecs.decompressor.decompress(blob)  # type: ignore[no-any-return]


def _planes(values: np.ndarray) -> np.ndarray:
    """(planes kept, m) uint8: the low bytes of `values` (little-endian) up to the highest non-zero one."""
    if not len(values):
        return np.empty((0, 0), np.uint8)
    width = (int(values.max()).bit_length() + 7) // 8
    return np.ascontiguousarray(values.view(np.uint8).reshape(len(values), values.itemsize)[:, :width].T)


def _packed(plane: np.ndarray, lo: int, bits: int) -> bytes:
    if bits == 8:  # random bytes (mantissas): nothing to pack
        return (plane - np.uint8(lo)).tobytes()  # type: ignore[no-any-return]
    spread = np.unpackbits((plane - np.uint8(lo))[:, None], axis=1, count=bits, bitorder="little")
    return np.packbits(spread.ravel(), bitorder="little").tobytes()  # type: ignore[no-any-return]


def _unpacked(raw: np.ndarray, m: int, bits: int) -> np.ndarray:
    if bits == 8:
        return raw
    spread = np.unpackbits(raw, count=m * bits, bitorder="little").reshape(m, bits)
    return np.packbits(spread, axis=1, bitorder="little")[:, 0]  # type: ignore[no-any-return]


def encode_column(values: np.ndarray) -> bytes:
    """A column of unsigned integers (uint32 or uint64) as byte planes."""
    planes = _planes(values)
    out = [bytes([len(planes)])]
    if not len(planes):
        return out[0]
    for plane, lo, hi in zip(planes, planes.min(axis=1).tolist(), planes.max(axis=1).tolist(), strict=True):
        if lo == hi:
            out.append(bytes([_CONST, lo]))
            continue
        bits = (hi - lo).bit_length()
        packed = bytes([_PACKED, lo, bits]) + _packed(plane, lo, bits)
        frame = compress(plane.tobytes())
        out.append(bytes([_ZSTD]) + _LENGTH.pack(len(frame)) + frame if len(frame) + 5 < len(packed) else packed)
    return b"".join(out)


class ColumnReader:
    """Reads encode_column's columns one after the other from a body."""

    def __init__(self, body: memoryview) -> None:
        self._body = body
        self._at = 0

    def _take(self, size: int, what: str) -> memoryview:
        if self._at + size > len(self._body):
            raise ValueError(f"{what} runs past the end of the body")
        out = self._body[self._at:self._at + size]
        self._at += size
        return out

    def column(self, m: int, dtype: type) -> np.ndarray:
        """The next column: m values of `dtype`."""
        itemsize = np.dtype(dtype).itemsize
        count = self._take(1, "planes count")[0]
        if count > itemsize:
            raise ValueError(f"{count} planes for a {itemsize}-byte column")
        out = np.zeros((m, itemsize), np.uint8)
        for k in range(count):
            kind = self._take(1, "plane kind")[0]
            if kind == _CONST:
                out[:, k] = self._take(1, "constant plane")[0]
            elif kind == _PACKED:
                lo, bits = self._take(2, "packed plane")
                if not 1 <= bits <= 8:
                    raise ValueError(f"a packed plane of {bits} bits")
                raw = np.frombuffer(self._take((m * bits + 7) // 8, "packed plane"), np.uint8)
                out[:, k] = _unpacked(raw, m, bits) + np.uint8(lo)
            elif kind == _ZSTD:
                (size,) = _LENGTH.unpack(self._take(_LENGTH.size, "zstd plane"))
                try:
                    plane = decompress(self._take(size, "zstd plane"))
                except zstandard.ZstdError as exc:
                    raise ValueError(f"zstd plane: {exc}") from exc
                if len(plane) != m:
                    raise ValueError(f"a zstd plane of {len(plane)} bytes, not {m}")
                out[:, k] = np.frombuffer(plane, np.uint8)
            else:
                raise ValueError(f"plane kind {kind} is unknown")
        return out.view(dtype).reshape(m)

    @property
    def at(self) -> int:
        """Bytes read so far."""
        return self._at

    def finish(self) -> None:
        if self._at != len(self._body):
            raise ValueError(f"{len(self._body) - self._at} bytes after the last column")
