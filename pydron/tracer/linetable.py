"""A rewritten code object's location table, made readable by CPython's line lookup.

CPython 3.11-3.13 find a code object's line numbers (``co_lines``,
``f_lineno``, the lines of a traceback) by stepping from entry to entry of
``co_linetable``, where an entry begins at the next byte with its top bit set:
every other byte of an entry must stay below 128. The ``bytecode`` package
(0.19) writes the one-line form with column bytes up to 255, where CPython's
own compiler keeps them below 128. After a line longer than 127 characters,
the line lookup then starts an entry inside another one, and every later
instruction may report the line before its own. ``readable`` rewrites such
entries in the long form, which carries the same lines and columns.
"""
from __future__ import annotations

import types

_ONE_LINE_FIRST, _ONE_LINE_LAST = 10, 12  # the one-line form: line delta 0, 1 or 2
_NO_COLUMNS, _LONG, _NO_LOCATION = 13, 14, 15


def readable(code: types.CodeType) -> types.CodeType:
    """``code``, with a location table whose entries CPython's line lookup reads as written."""
    table = code.co_linetable
    entries = list(_entries(table))
    bad = {start for start, _ in entries if _bad(table, start)}
    if not bad:
        return code
    out = bytearray()
    for start, end in entries:
        if start in bad:
            header = table[start]
            kind, size = (header >> 3) & 15, (header & 7) + 1
            out.append(0x80 | (_LONG << 3) | (size - 1))
            out += _signed_varint(kind - _ONE_LINE_FIRST)  # the line delta
            out += _varint(0)  # ends on the same line
            out += _varint(table[start + 1] + 1)  # column + 1
            out += _varint(table[start + 2] + 1)  # end column + 1
        else:
            out += table[start:end]
    return code.replace(co_linetable=bytes(out))


def _bad(table: bytes, start: int) -> bool:
    """A one-line entry with a column byte CPython would take for the start of the next."""
    kind = (table[start] >> 3) & 15
    return _ONE_LINE_FIRST <= kind <= _ONE_LINE_LAST and (table[start + 1] >= 128 or table[start + 2] >= 128)


def _entries(table: bytes):
    """(start, end) of each entry, by its kind's own layout (not by the top bits)."""
    index = 0
    while index < len(table):
        start = index
        kind = (table[index] >> 3) & 15
        index += 1
        if kind == _LONG:
            for _ in range(4):  # line delta, end line delta, column + 1, end column + 1
                index = _skip_varint(table, index)
        elif kind == _NO_COLUMNS:
            index = _skip_varint(table, index)
        elif _ONE_LINE_FIRST <= kind <= _ONE_LINE_LAST:
            index += 2
        elif kind != _NO_LOCATION:
            index += 1  # the short form: one byte of columns
        yield start, index


def _skip_varint(table: bytes, index: int) -> int:
    while table[index] & 64:
        index += 1
    return index + 1


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 64:
        out.append(64 | (value & 63))
        value >>= 6
    out.append(value)
    return bytes(out)


def _signed_varint(value: int) -> bytes:
    return _varint((-value << 1) | 1 if value < 0 else value << 1)
