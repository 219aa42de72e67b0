"""zstd for stored bodies: compressing when it pays, and decompressing within a bound.

A stored body is compressed as one zstd frame that declares its size. On load the
declared size is checked against the bound before anything is allocated, windows
larger than any level up to 19 uses are refused, and a frame that does not declare
its size is decompressed a chunk at a time up to the bound.
"""

from __future__ import annotations

import functools
import threading
from typing import Literal

import zstandard

from flowpoint.errors import CodecError, CorruptCheckpoint
from flowpoint.ids import CheckpointId

__all__ = ["COMPRESSION_THRESHOLD", "MAX_LEVEL", "MIN_LEVEL", "Compression", "Zstd", "zstd_at"]

Compression = Literal["zstd"]
COMPRESSION_THRESHOLD = 256
"""Bodies shorter than this are never compressed: zstd's frame would eat the gain.

A delta of one chat message (about 450 bytes) compresses to about 330: over a long
run that is a quarter of what its deltas store. Whether a body is compressed is
recorded in its header, so data written with any threshold reads the same.
"""
MIN_LEVEL, MAX_LEVEL = -7, 19
"""The zstd levels a codec may use."""

_MIB = 1024 * 1024
# Windows above this are refused when decompressing: zstd levels up to 19 never use more,
# and a frame asking for a huge window would make the decoder allocate it.
_MAX_WINDOW_SIZE = 8 * _MIB
# Frames that do not declare their size are decompressed this much at a time.
_STREAM_CHUNK = _MIB


class Zstd:
    """zstd contexts at one level, one per thread.

    zstd contexts are not thread-safe, and making one costs about as much as
    compressing a small state: each thread keeps its own.
    """

    def __init__(self, level: int) -> None:
        self.level = level
        self._local = threading.local()

    def compress(self, body: bytes) -> bytes | None:
        """``body`` compressed, or ``None`` when that would not make it smaller."""
        if len(body) < COMPRESSION_THRESHOLD:
            return None
        compressed = self._compressor().compress(body)
        return compressed if len(compressed) < len(body) else None

    def decompress(
        self,
        checkpoint_id: CheckpointId,
        compression: str | None,
        body: memoryview | bytes,
        limit: int,
    ) -> memoryview | bytes:
        """``body`` as stored under ``compression``, decompressed to at most ``limit`` bytes.

        An uncompressed body is returned as it is. Raises :class:`CorruptCheckpoint`
        for a body over the limit or a broken frame, before anything over the limit
        is allocated, and :class:`CodecError` for a compression this codec does not read.
        """
        if compression is None:
            if len(body) > limit:
                raise CorruptCheckpoint(
                    checkpoint_id, f"the state is {len(body)} bytes, over max_state_size {limit}"
                )
            return body
        if compression != "zstd":
            raise CodecError(
                f"checkpoint {checkpoint_id} is compressed with {compression!r:.40}, which this "
                f"codec does not read"
            )

        def corrupt(reason: str) -> CorruptCheckpoint:
            return CorruptCheckpoint(checkpoint_id, f"zstd body: {reason}")

        try:
            size = zstandard.frame_content_size(body)
        except zstandard.ZstdError as exc:
            raise corrupt(str(exc)) from None
        if size > limit:
            # Checked before anything is allocated: a frame may claim any size.
            raise corrupt(f"it would decompress to {size} bytes, over max_state_size {limit}")
        decompressor = self._decompressor()
        try:
            if size >= 0:
                # Exactly one frame, exactly the size it declares.
                return decompressor.decompress(body, allow_extra_data=False)
            # No declared size (flowpoint always declares it): decompress a chunk at a
            # time up to the limit, then once more with the size now known.
            found = 0
            with decompressor.stream_reader(body, read_across_frames=False) as reader:
                while chunk := reader.read(min(_STREAM_CHUNK, limit + 1 - found)):
                    found += len(chunk)
                    if found > limit:
                        raise corrupt(f"it decompresses to over max_state_size {limit} bytes")
            # This pass also catches a truncated frame, which the stream reader does not.
            return decompressor.decompress(
                body, max_output_size=max(found, 1), allow_extra_data=False
            )
        except zstandard.ZstdError as exc:
            raise corrupt(str(exc)) from None

    def _compressor(self) -> zstandard.ZstdCompressor:
        compressor: zstandard.ZstdCompressor | None = getattr(self._local, "compressor", None)
        if compressor is None:
            compressor = self._local.compressor = zstandard.ZstdCompressor(
                level=self.level, write_content_size=True
            )
        return compressor

    def _decompressor(self) -> zstandard.ZstdDecompressor:
        decompressor: zstandard.ZstdDecompressor | None = getattr(self._local, "decompressor", None)
        if decompressor is None:
            decompressor = self._local.decompressor = zstandard.ZstdDecompressor(
                max_window_size=_MAX_WINDOW_SIZE
            )
        return decompressor


@functools.cache
def zstd_at(level: int) -> Zstd:
    """The :class:`Zstd` of ``level`` that every codec of this process shares.

    Its contexts are per thread already; sharing them spares each new codec (a
    store opened per request, say) making its own on its first save and load.
    """
    return Zstd(level)
