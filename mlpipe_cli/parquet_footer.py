"""Rows per row group of a Parquet file, read from its footer without pyarrow.

Polars (2.1) exposes a file's row count and key-value metadata but not its row groups, and
``import pyarrow.parquet`` costs ~0.15 s of CPU (with numpy), which was a third of
`mlpipe psi-report`'s fixed cost (#19) for a list of integers. The footer is Thrift's
compact protocol (https://github.com/apache/thrift/blob/master/doc/specs/thrift-compact-protocol.md):

    <row groups...> <FileMetaData> <4-byte little-endian length> "PAR1"

``FileMetaData`` field 4 is ``list<RowGroup>`` and ``RowGroup`` field 3 is ``num_rows``
(i64); every other field is skipped by its wire type. Anything this reader does not
understand (an encrypted "PARE" footer, a truncated file, an unknown wire type) raises
``FooterError`` and the caller falls back to pyarrow, which also words the error for a file
that is not Parquet at all. tests/test_parquet_footer.py checks it against pyarrow.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from mlpipe_cli.errors import Signal

_MAGIC = b"PAR1"
# compact-protocol wire types
_STOP, _TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE = 0, 1, 2, 3, 4, 5, 6, 7
_BINARY, _LIST, _SET, _MAP, _STRUCT = 8, 9, 10, 11, 12
_MAX_DEPTH = 64  # Parquet's own structs nest a handful deep; deeper is a corrupt footer


class FooterError(Signal):
    """The footer could not be read by this reader (the caller falls back to pyarrow)."""


def row_group_rows(path: Path | str) -> list[int]:
    """``num_rows`` of each row group, in file order."""
    with open(path, "rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size < 12:
            raise FooterError("file too small for a Parquet footer")
        handle.seek(size - 8)
        tail = handle.read(8)
        if tail[4:] != _MAGIC:
            raise FooterError("no plain Parquet footer (PAR1)")
        length = int.from_bytes(tail[:4], "little")
        if length <= 0 or length > size - 12:
            raise FooterError("footer length out of range")
        handle.seek(size - 8 - length)
        footer = handle.read(length)
    return _Reader(footer).file_row_groups()


class _Reader:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def file_row_groups(self) -> list[int]:
        rows: list[int] | None = None
        for kind, field_id in self._fields():
            if field_id == 4 and kind == _LIST:
                size, elem = self._list_header()
                if elem != _STRUCT:
                    raise FooterError("row_groups is not a list of structs")
                rows = [self._row_group() for _ in range(size)]
            else:
                self._skip(kind, 0)
        if rows is None:
            raise FooterError("FileMetaData has no row_groups")
        return rows

    def _row_group(self) -> int:
        num_rows: int | None = None
        for kind, field_id in self._fields():
            if field_id == 3 and kind == _I64:
                num_rows = self._zigzag()
            else:
                self._skip(kind, 1)
        if num_rows is None or num_rows < 0:
            raise FooterError("RowGroup without a valid num_rows")
        return num_rows

    # -- compact protocol -----------------------------------------------------------------

    def _byte(self) -> int:
        try:
            value = self.buf[self.pos]
        except IndexError:
            raise FooterError("footer ends early") from None
        self.pos += 1
        return value

    def _varint(self) -> int:
        shift = result = 0
        while True:
            byte = self._byte()
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
            shift += 7
            if shift > 70:
                raise FooterError("varint too long")

    def _zigzag(self) -> int:
        value = self._varint()
        return (value >> 1) ^ -(value & 1)

    def _fields(self) -> Iterator[tuple[int, int]]:
        """(type, field id) of each field of the struct read next, up to its stop byte; the
        caller reads or skips each field's value before asking for the next."""
        last = 0
        while True:
            kind, field_id = self._field_header(last)
            if kind == _STOP:
                return
            last = field_id
            yield kind, field_id

    def _field_header(self, last: int) -> tuple[int, int]:
        byte = self._byte()
        kind = byte & 0x0F
        if kind == _STOP:
            return _STOP, 0
        delta = byte >> 4
        return kind, (last + delta) if delta else self._zigzag()

    def _list_header(self) -> tuple[int, int]:
        byte = self._byte()
        size = byte >> 4
        if size == 15:
            size = self._varint()
        return size, byte & 0x0F

    def _skip(self, kind: int, depth: int) -> None:
        if depth > _MAX_DEPTH:
            raise FooterError("footer nests too deep")
        if kind in (_TRUE, _FALSE):
            return
        if kind == _BYTE:
            self._advance(1)
        elif kind in (_I16, _I32, _I64):
            self._varint()
        elif kind == _DOUBLE:
            self._advance(8)
        elif kind == _BINARY:
            self._advance(self._varint())
        elif kind in (_LIST, _SET):
            size, elem = self._list_header()
            for _ in range(size):
                self._skip_element(elem, depth + 1)
        elif kind == _MAP:
            size = self._varint()
            if size:
                types = self._byte()
                for _ in range(size):
                    self._skip_element(types >> 4, depth + 1)
                    self._skip_element(types & 0x0F, depth + 1)
        elif kind == _STRUCT:
            for inner, _field_id in self._fields():
                self._skip(inner, depth + 1)
        else:
            raise FooterError(f"unknown compact-protocol type {kind}")

    def _skip_element(self, kind: int, depth: int) -> None:
        # inside a list, set or map a bool is a whole byte (in a struct the type says it)
        if kind in (_TRUE, _FALSE):
            self._advance(1)
        else:
            self._skip(kind, depth)

    def _advance(self, count: int) -> None:
        if count < 0 or self.pos + count > len(self.buf):
            raise FooterError("footer ends early")
        self.pos += count
