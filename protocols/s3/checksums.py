"""S3 flexible checksums of whole objects and of multipart uploads.

A single PUT that carries an ``x-amz-checksum-<alg>`` (header or aws-chunked trailer) keeps that
verified value with its version.  A multipart upload created with ``x-amz-checksum-algorithm``
computes that algorithm over every part (whatever the client sent: a value it sent must match)
and, at Complete, the object's checksum the way S3 does:

* ``COMPOSITE`` (SHA1, SHA256; the default of CRC32/CRC32C): the algorithm over the concatenated raw
  part checksums, base64, with ``-<part count>``;
* ``FULL_OBJECT`` (CRC32 and CRC32C when asked, the only type of CRC64NVME): the CRC of the whole object, combined from
  the part CRCs and sizes (zlib's crc32_combine, for any reflected CRC) without re-reading bytes.

The value is stored in the version's metadata with the part values, so HEAD/GET with
``x-amz-checksum-mode: ENABLED``, GET ``?partNumber=`` and GetObjectAttributes return them.
"""
from __future__ import annotations

import base64

from .chunked import CHECKSUMS, CRC_POLY as _POLY, new_checksum

#: S3's algorithm names -> ours (x-amz-checksum-<ours>).
ALGORITHMS = {k.upper(): k for k in CHECKSUMS}
COMPOSITE, FULL_OBJECT = "COMPOSITE", "FULL_OBJECT"


def default_type(alg: str) -> str:
    """S3's type when CreateMultipartUpload names none: FULL_OBJECT only for CRC64NVME (composite
    was the only type before 2025, so older clients expect it for CRC32/CRC32C)."""
    return FULL_OBJECT if alg == "crc64nvme" else COMPOSITE


def valid_type(alg: str, kind: str) -> bool:
    if alg == "crc64nvme":             # (S3 offers only the full-object CRC64NVME)
        return kind == FULL_OBJECT
    return kind == COMPOSITE or (kind == FULL_OBJECT and alg in _POLY)


def composite(alg: str, part_values: list[str]) -> str:
    """S3's checksum-of-checksums of a multipart object: b64(alg(raw part digests))-N."""
    h = new_checksum(alg)
    for v in part_values:
        h.update(base64.b64decode(v))
    return f"{base64.b64encode(h.digest()).decode()}-{len(part_values)}"


def _times(mat: list[int], vec: int) -> int:
    s, i = 0, 0
    while vec:
        if vec & 1:
            s ^= mat[i]
        vec >>= 1
        i += 1
    return s


def _square(mat: list[int]) -> list[int]:
    return [_times(mat, m) for m in mat]


def crc_combine(crc1: int, crc2: int, len2: int, poly: int, width: int) -> int:
    """The CRC of A||B from crc(A), crc(B) and len(B) (zlib's crc32_combine; works for reflected
    CRCs whose initial value equals their final xor, as CRC32, CRC32C and CRC64NVME)."""
    if len2 <= 0:
        return crc1
    odd = [poly] + [1 << n for n in range(width - 1)]      # one zero bit
    even = _square(odd)                                      # two zero bits
    odd = _square(even)                                      # four zero bits
    while True:
        even = _square(odd)                                  # (first time: one zero byte)
        if len2 & 1:
            crc1 = _times(even, crc1)
        len2 >>= 1
        if not len2:
            break
        odd = _square(even)
        if len2 & 1:
            crc1 = _times(odd, crc1)
        len2 >>= 1
        if not len2:
            break
    return crc1 ^ crc2


def full_object(alg: str, parts: list[tuple[str, int]]) -> str:
    """The whole object's CRC from [(part value b64, part size)]."""
    poly, width = _POLY[alg]
    crc = 0
    for value, size in parts:
        crc = crc_combine(crc, int.from_bytes(base64.b64decode(value), "big"), size, poly, width)
    return base64.b64encode(crc.to_bytes(width // 8, "big")).decode()


def object_value(alg: str, kind: str, parts: list[tuple[str, int]]) -> str:
    if kind == FULL_OBJECT:
        return full_object(alg, parts)
    return composite(alg, [v for v, _ in parts])


def headers(stored: dict | None, part: int | None = None) -> list[tuple[str, str]]:
    """x-amz-checksum-<alg> (+ x-amz-checksum-type) of a version's stored checksum, or of one
    part of it (`part`, 1-based) — nothing when it has none."""
    if not stored:
        return []
    alg = stored["algorithm"]
    if part is not None:
        values = stored.get("parts") or []
        if not stored.get("parts"):
            return [] if part != 1 else [(f"x-amz-checksum-{alg}", stored["value"]),
                                         ("x-amz-checksum-type", stored.get("type", FULL_OBJECT))]
        if not 1 <= part <= len(values):
            return []
        return [(f"x-amz-checksum-{alg}", values[part - 1]), ("x-amz-checksum-type", stored["type"])]
    return [(f"x-amz-checksum-{alg}", stored["value"]), ("x-amz-checksum-type", stored.get("type", FULL_OBJECT))]
