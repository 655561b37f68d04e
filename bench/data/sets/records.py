"""The TFRecord format without TensorFlow: record framing (length, masked CRC32C of the length,
data, masked CRC32C of the data, as tensorflow/core/lib/io/record_writer.cc writes it) and a
minimal tf.train.Example codec (bytes and int64 features), so the JAX pipeline and the up-front
checks read ImageNet-format shards in a process that never imports TensorFlow."""
from __future__ import annotations

import struct
from typing import BinaryIO, Iterator

from bench.errors import BenchInputError

_HEADER = 12  # uint64 length + masked CRC32C of those 8 bytes
_FOOTER = 4   # masked CRC32C of the data


def _crc_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1  # Castagnoli, reflected
        table.append(c)
    return table


_TABLE = _crc_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    table = _TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    """TFRecord's mask: a CRC of data that holds CRCs is itself a poor CRC, so it is rotated and offset."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame(data: bytes) -> bytes:
    """One record as it lies in a shard."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc(length)) + data + struct.pack("<I", masked_crc(data))


class RecordError(BenchInputError):
    """A shard that is not TFRecord framing, or ends inside a record."""


def record_spans(f: BinaryIO, where: str, *, check_data: int = 0) -> Iterator[tuple[int, int]]:
    """(offset of the data, its length) of every record of an open shard, reading only the
    headers (each length's CRC checked; the data's CRC for the first `check_data` records):
    a file that is not TFRecord framing, or ends inside a record, raises RecordError."""
    f.seek(0, 2)
    size = f.tell()
    pos, k = 0, 0
    while pos < size:
        f.seek(pos)
        head = f.read(_HEADER)
        if len(head) < _HEADER:
            raise RecordError(f"truncated TFRecord shard {where}: {size - pos} stray bytes after record {k}")
        (length,), (crc,) = struct.unpack("<Q", head[:8]), struct.unpack("<I", head[8:])
        if masked_crc(head[:8]) != crc:
            raise RecordError(f"not a TFRecord file (record {k}'s length fails its CRC32C): {where}")
        end = pos + _HEADER + length + _FOOTER
        if end > size:
            raise RecordError(f"truncated TFRecord shard {where}: record {k} needs {end - size} bytes more")
        if k < check_data:
            data = f.read(length)
            (dcrc,) = struct.unpack("<I", f.read(_FOOTER))
            if masked_crc(data) != dcrc:
                raise RecordError(f"corrupt TFRecord shard {where}: record {k}'s data fails its CRC32C")
        yield pos + _HEADER, length
        pos, k = end, k + 1


# ---- tf.train.Example: Example{features=1: Features{feature=1: map<string, Feature>}},
# Feature{bytes_list=1 | float_list=2 | int64_list=3}, each list's values in field 1 ------------
def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = out = 0
    while True:
        b = buf[i]
        i += 1
        out |= (b & 0x7F) << shift
        if not b & 0x80:
            return out, i
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int, object]]:
    """(field number, wire type, value: int or bytes) of a protobuf message."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            n, i = _varint(buf, i)
            value, i = buf[i:i + n], i + n
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        else:
            raise ValueError(f"wire type {wire}")
        yield num, wire, value


def parse_example(record: bytes) -> dict[str, list]:
    """The bytes and int64 features of a serialised tf.train.Example (float lists are skipped)."""
    out: dict[str, list] = {}
    for num, _, features in _fields(record):
        if num != 1:
            continue
        for fnum, _, entry in _fields(features):
            if fnum != 1:
                continue
            name, feature = "", b""
            for enum, _, v in _fields(entry):
                name, feature = (v.decode(), feature) if enum == 1 else (name, v if enum == 2 else feature)
            for kind, _, values in _fields(feature):
                if kind == 1:
                    out[name] = [v for n, _, v in _fields(values) if n == 1]
                elif kind == 3:
                    ints: list[int] = []
                    for n, wire, v in _fields(values):
                        if n != 1:
                            continue
                        if wire == 0:
                            ints.append(_signed(v))
                        else:  # packed
                            j = 0
                            while j < len(v):
                                x, j = _varint(v, j)
                                ints.append(_signed(x))
                    out[name] = ints
    return out


def _signed(x: int) -> int:
    return x - (1 << 64) if x >= 1 << 63 else x


def _key(num: int, wire: int) -> bytes:
    return _put_varint((num << 3) | wire)


def _put_varint(x: int) -> bytes:
    x &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = x & 0x7F
        x >>= 7
        if x:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _len_field(num: int, payload: bytes) -> bytes:
    return _key(num, 2) + _put_varint(len(payload)) + payload


def encode_example(features: dict[str, bytes | int]) -> bytes:
    """A serialised tf.train.Example of single bytes or int64 values (what an ImageNet record holds)."""
    entries = b""
    for name, value in features.items():
        if isinstance(value, bytes):
            feature = _len_field(1, _len_field(1, value))
        else:
            feature = _len_field(3, _len_field(1, _put_varint(int(value))))
        entries += _len_field(1, _len_field(1, name.encode()) + _len_field(2, feature))
    return _len_field(1, entries)


def read_record(path: str, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)
