"""Content-defined chunking of a pushed byte stream (FastCDC via pyfastcdc).

pyfastcdc cuts a buffer it is handed; uploads arrive as a stream of writes, so this keeps a
carry of the bytes after the last cut point and only emits chunks whose end is final.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Iterator

from pyfastcdc import FastCDC

#: Average chunk size of new repositories (`init --chunk-avg`).  64 KiB was re-measured against
#: 32 / 96 / 128 / 256 KiB (docs/benchmarks.md, "textcodec"): larger chunks store versioned data
#: worse (+13 / +22 / +40 % on the versions corpus) and compress text only 0.6 % (128 KiB) to 5.6 %
#: (256 KiB) better, still not down to restic's 1 MiB blobs.
DEFAULT_AVG = 64 * 1024
#: The chunk size of a repository whose config.json names none: what every version wrote before
#: the size was recorded.  Never change it with DEFAULT_AVG, or such repositories stop deduplicating.
LEGACY_AVG = 64 * 1024


@lru_cache(maxsize=8)
def _cdc(seed: int, avg_size: int) -> FastCDC:
    """One FastCDC per repository: building its gear tables from the seed cost more than
    chunking a small file.  It only holds its configuration (cut_buf reads it), so every
    upload and thread shares it."""
    return FastCDC(avg_size, seed=seed)


class StreamChunker:
    """Feed bytes with push(); every returned chunk is final. finish() flushes the tail."""

    def __init__(self, seed: int, avg_size: int = DEFAULT_AVG):
        self._cdc = _cdc(seed, avg_size)
        self.max_size = self._cdc.max_size
        self._buf = bytearray()

    def push(self, data, batch: int = 4 * 1024 * 1024) -> list[bytes]:
        """Add data; return the chunks that are final once `batch` bytes have gathered."""
        self._buf += data
        if len(self._buf) < batch:
            return []
        return self._cut(final=False)

    def finish(self) -> list[bytes]:
        return self._cut(final=True)

    def _cut(self, final: bool) -> list[bytes]:
        buf = self._buf
        view = memoryview(buf)
        out: list[bytes] = []
        end = 0
        c = cuts = self._cdc.cut_buf(view)
        for c in cuts:
            stop = c.offset + c.length
            # The last cut of a partial buffer may be an artefact of the buffer end.
            if not final and stop == len(buf):
                break
            out.append(bytes(view[c.offset:stop]))
            end = stop
        del cuts, c
        view.release()
        del buf[:end]
        return out


def chunks_of(stream, seed: int, avg_size: int = DEFAULT_AVG, read_size: int = 4 * 1024 * 1024) -> Iterator[bytes]:
    """Chunk a readable binary stream (used for re-chunking staged updates)."""
    ch = StreamChunker(seed, avg_size)
    while True:
        data = stream.read(read_size)
        if not data:
            break
        yield from ch.push(data, batch=read_size)
    yield from ch.finish()
