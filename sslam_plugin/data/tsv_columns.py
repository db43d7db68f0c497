"""Vectorised parse of ``name<TAB>integer[<TAB>integer...]`` lines into a packed table.

Why: a manifest of two million lines parsed line by line in Python takes
seconds and leaves two million ``str`` objects behind. Here numpy finds the
tabs and newlines of the whole file at once; the names stay where they are in
the file's bytes (a :class:`~.row_tables.StringTable` of their positions) and
the integers go into one array. Only the plain form is handled (``\\n`` line
ends, unsigned decimal digits, no other control characters, no blank lines
holding spaces); for anything else :func:`parse_name_int_lines` returns None
and the caller parses line by line, which also names the line of a real error.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from .row_tables import StringTable

__all__ = ["parse_name_int_lines", "has_odd_line_breaks"]

MAX_DIGITS = 18  # int64 holds any 18-digit number

# line breaks str.splitlines() knows besides "\n" (UTF-8 bytes); their presence sends a file to the slow path
_ODD_BYTES = (b"\r", b"\x0b", b"\x0c", b"\x1c", b"\x1d", b"\x1e")
_ODD_CHARACTERS = (b"\xc2\x85", b"\xe2\x80\xa8", b"\xe2\x80\xa9")  # U+0085, U+2028, U+2029
_TAB, _NEWLINE, _ZERO = 9, 10, 48


def has_odd_line_breaks(raw: bytes) -> bool:
    """Whether ``raw`` holds a line break other than ``\\n`` (``\\r``, form feed, U+2028...)."""
    if any(sep in raw for sep in _ODD_BYTES):
        return True
    return not raw.isascii() and any(sep in raw for sep in _ODD_CHARACTERS)


def _digits(arr: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> Optional[np.ndarray]:
    """int64 values of the decimal fields ``arr[lo:hi]``; None when one is empty, too long or not digits."""
    width = hi - lo
    if not len(width):
        return np.zeros(0, np.int64)
    if width.min() < 1 or width.max() > MAX_DIGITS:
        return None
    value = np.zeros(len(lo), np.int64)
    last = len(arr) - 1
    for k in range(int(width.max())):
        active = width > k
        digit = arr[np.minimum(lo + k, last)] - np.uint8(_ZERO)  # uint8: bytes below '0' wrap above 9
        if np.any(active & (digit > 9)):
            return None
        value = np.where(active, value * 10 + digit, value)
    return value


def _line_bounds(arr: np.ndarray, columns: int) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """(line starts, tab and newline positions as a (lines, columns + 1) array); None where a line is not plain."""
    fields = columns + 1
    if not len(arr):
        return np.zeros(0, np.int64), np.zeros((0, fields), np.int64)
    separators = np.flatnonzero(arr < 32)  # tab and newline; any other control byte: not plain
    if len(arr) and arr[-1] != _NEWLINE:
        separators = np.append(separators, len(arr))  # a last line without its newline
    if len(separators) % fields == 0:
        # the usual file: tab..tab newline, line after line, without blank lines
        grid = separators.reshape(-1, fields)
        kinds = arr[np.minimum(grid, len(arr) - 1)]
        ends_ok = (kinds[:, -1] == _NEWLINE) | (grid[:, -1] == len(arr))
        if np.all(kinds[:, :-1] == _TAB) and np.all(ends_ok):
            starts = np.concatenate(([0], grid[:-1, -1] + 1)).astype(np.int64)
            if np.all(grid[:, 0] >= starts):
                return starts, grid
    # blank lines, or something else: find each line's tabs
    kinds = arr[np.minimum(separators, len(arr) - 1)]
    is_end = (kinds == _NEWLINE) | (separators == len(arr))
    if np.any(~is_end & (kinds != _TAB)):
        return None
    ends = separators[is_end]
    starts = np.concatenate(([0], ends[:-1] + 1)).astype(np.int64)
    tabs = separators[~is_end]
    first = np.searchsorted(tabs, starts)
    count = np.searchsorted(tabs, ends) - first
    blank = (count == 0) & (ends == starts)
    if np.any(~blank & (count != columns)):
        return None
    starts, ends, first = starts[~blank], ends[~blank], first[~blank]
    grid = np.stack([tabs[first + k] for k in range(columns)] + [ends], axis=1) if len(starts) else np.zeros((0, fields), np.int64)
    return starts, grid


def parse_name_int_lines(raw: bytes, columns: int, start: int = 0) -> Optional[Tuple[StringTable, np.ndarray]]:
    """Names and an (rows, columns) int64 array from ``raw[start:]``; None where a line is not plain.

    ``raw`` must be valid UTF-8 without odd line breaks (:func:`has_odd_line_breaks`);
    empty lines are skipped. The names stay in ``raw``'s buffer (no copy).
    """
    arr = np.frombuffer(raw, dtype=np.uint8)[start:]
    bounds = _line_bounds(arr, columns)
    if bounds is None:
        return None
    starts, grid = bounds
    values = np.empty((len(starts), columns), np.int64)
    for k in range(columns):
        column = _digits(arr, grid[:, k] + 1, grid[:, k + 1])
        if column is None:
            return None
        values[:, k] = column
    return StringTable(arr, starts, grid[:, 0].copy()), values
