"""Per-row tables packed in flat numpy arrays: strings, and short lists of integers.

Why: a DataLoader worker is a forked copy of the main process. Reading one
Python object per row (a ``str`` in a list) writes its reference count, so the
worker copies every page the rows live on: about 80 bytes a row, per worker,
for names alone. Here all rows share a few arrays; reading a row touches only
those arrays' headers, and their pages stay shared.
"""

from __future__ import annotations

from typing import Iterable, Iterator, List, Optional, Sequence, overload

import numpy as np

__all__ = ["StringTable", "IntListTable", "match_rows", "row_hashes"]

_CHUNK = 1 << 20  # bytes decoded at once when iterating
_HASH_CHUNK = 1 << 18  # bytes hashed at once: small arrays that stay in the cache
_MASK64 = (1 << 64) - 1
# file names that are not UTF-8 (os.fsdecode's lone surrogates) go in and come out unchanged
_ERRORS = "surrogateescape"
_HASH_BASES = (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F)  # odd: invertible modulo 2**64


def _as_offsets(lengths: np.ndarray) -> np.ndarray:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


def _select(key, size: int) -> np.ndarray:
    """Row indices from a slice, a bool mask or integer indices (negative ones count from the end)."""
    if isinstance(key, slice):
        return np.arange(size, dtype=np.int64)[key]
    key = np.asarray(key)
    if key.dtype == bool:
        if key.shape != (size,):
            raise IndexError(f"a boolean mask of {key.shape} for a table of {size} rows")
        return np.flatnonzero(key)
    rows = key.astype(np.int64, copy=False).reshape(-1)
    if rows.size and (rows.min() < -size or rows.max() >= size):
        raise IndexError(f"row index out of range for a table of {size} rows")
    return np.where(rows < 0, rows + size, rows)


def _row_index(index, size: int) -> int:
    i = int(index) + size if index < 0 else int(index)
    if not 0 <= i < size:
        raise IndexError(f"row {index} of a table of {size} rows")
    return i


class StringTable(Sequence[str]):
    """Strings as byte ranges of one UTF-8 ``uint8`` buffer: row ``i`` is ``data[starts[i]:ends[i]]``.

    Behaves as a read-only list of ``str``: ``len``, ``table[i]``, slices and
    index arrays or masks (giving a table that shares the buffer), iteration,
    ``==`` with a list or a table. A parsed file's buffer is used in place,
    with no copy of the names.
    """

    __slots__ = ("data", "starts", "ends")

    def __init__(self, data: Optional[np.ndarray] = None, starts: Optional[np.ndarray] = None,
                 ends: Optional[np.ndarray] = None):
        self.data = np.zeros(0, np.uint8) if data is None else np.asarray(data, dtype=np.uint8).reshape(-1)
        self.starts = np.zeros(0, np.int64) if starts is None else np.asarray(starts, dtype=np.int64)
        self.ends = np.zeros(0, np.int64) if ends is None else np.asarray(ends, dtype=np.int64)
        if self.starts.shape != self.ends.shape or self.starts.ndim != 1:
            raise ValueError("starts and ends must be 1-D arrays of the same length")

    @classmethod
    def from_strings(cls, strings: Iterable[str]) -> "StringTable":
        encoded = [s.encode("utf-8", _ERRORS) for s in strings]
        offsets = _as_offsets(np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)))
        return cls(np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets[:-1], offsets[1:])

    @classmethod
    def concat(cls, tables: Sequence["StringTable"]) -> "StringTable":
        """The rows of ``tables``, one after another (their buffers side by side)."""
        tables = list(tables)
        if not tables:
            return cls()
        shifts = np.cumsum([0] + [len(t.data) for t in tables[:-1]])
        return cls(np.concatenate([t.data for t in tables]),
                   np.concatenate([t.starts + s for t, s in zip(tables, shifts)]),
                   np.concatenate([t.ends + s for t, s in zip(tables, shifts)]))

    def __len__(self) -> int:
        return len(self.starts)

    def __reduce__(self):
        return (type(self), (self.data, self.starts, self.ends))

    @property
    def nbytes(self) -> int:
        return self.data.nbytes + self.starts.nbytes + self.ends.nbytes

    def lengths(self) -> np.ndarray:
        """Bytes per row."""
        return self.ends - self.starts

    @overload
    def __getitem__(self, key: int) -> str: ...

    @overload
    def __getitem__(self, key: slice) -> "StringTable": ...

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            i = _row_index(key, len(self))
            return self.data[self.starts[i]:self.ends[i]].tobytes().decode("utf-8", _ERRORS)
        if isinstance(key, slice):
            return StringTable(self.data, self.starts[key], self.ends[key])
        return self.take(key)

    def take(self, rows) -> "StringTable":
        """The rows ``rows`` (int indices or a bool mask), in that order; the buffer is shared."""
        rows = _select(rows, len(self))
        return StringTable(self.data, self.starts[rows], self.ends[rows])

    def __iter__(self) -> Iterator[str]:
        n, first = len(self), 0
        while first < n:
            last = min(n, first + 4096)
            starts, ends = self.starts[first:last], self.ends[first:last]
            base, top = (int(starts.min()), int(ends.max())) if len(starts) else (0, 0)
            if top - base <= _CHUNK:  # rows near each other (a parsed file): one copy, then slices
                chunk = self.data[base:top].tobytes()
                for a, b in zip((starts - base).tolist(), (ends - base).tolist()):
                    yield chunk[a:b].decode("utf-8", _ERRORS)
            else:
                for a, b in zip(starts.tolist(), ends.tolist()):
                    yield self.data[a:b].tobytes().decode("utf-8", _ERRORS)
            first = last

    def tolist(self) -> List[str]:
        return list(self)

    def __contains__(self, value: object) -> bool:
        return isinstance(value, str) and any(s == value for s in self)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, StringTable):
            return np.array_equal(self.lengths(), other.lengths()) and all(a == b for a, b in zip(self, other))
        if isinstance(other, (list, tuple)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None  # mutable arrays inside, like a list

    def __repr__(self) -> str:
        shown = ", ".join(repr(s) for s in self[:3])
        return f"StringTable([{shown}{', ...' if len(self) > 3 else ''}], rows={len(self)})"


def _powers(base: int, count: int) -> np.ndarray:
    """base**k modulo 2**64 for k < count (uint64)."""
    steps = np.full(count, base, dtype=np.uint64)
    steps[0] = 1
    with np.errstate(over="ignore"):
        return np.multiply.accumulate(steps, dtype=np.uint64)


def _sorting(positions: np.ndarray) -> np.ndarray:
    """The order that sorts ``positions``; cheap when they already are (rows of a parsed file)."""
    if np.all(positions[1:] >= positions[:-1]):
        return np.arange(len(positions))
    return np.argsort(positions, kind="stable")


def row_hashes(table: StringTable, bases: Sequence[int] = _HASH_BASES) -> np.ndarray:
    """Polynomial hashes of each row's bytes modulo 2**64, one per base: (len(bases), rows) uint64.

    ``sum(b[k] * base**k)`` over the row's bytes, from prefix sums over the
    whole buffer taken a chunk at a time: no per-row Python, no per-byte index
    array. Equal rows hash alike, whatever their buffer and position.
    """
    data, n = table.data, len(table)
    out = np.zeros((len(bases), n), np.uint64)
    if not n:
        return out
    size = _HASH_CHUNK
    starts_order, ends_order = _sorting(table.starts), _sorting(table.ends)
    starts, ends = table.starts[starts_order], table.ends[ends_order]
    # where each chunk's positions begin among the sorted starts and ends; position len(data) goes to the last chunk
    edges = np.arange(0, len(data) + size, size)
    edges[-1] = max(edges[-1], len(data) + 1)
    start_bounds, end_bounds = np.searchsorted(starts, edges), np.searchsorted(ends, edges)
    lengths = table.lengths().astype(np.uint64)
    terms, sums = np.empty(size, np.uint64), np.zeros(size + 1, np.uint64)
    with np.errstate(over="ignore"):
        for row, base in enumerate(bases):
            inverse = pow(base, -1, 1 << 64)
            power, inverse_power = _powers(base, size + 1), _powers(inverse, size + 1)
            step, inv_step = pow(base, size, 1 << 64), pow(inverse, size, 1 << 64)
            at_start, at_end, unscale = np.zeros(n, np.uint64), np.zeros(n, np.uint64), np.zeros(n, np.uint64)
            carry, scale, inv_scale = 0, 1, 1  # prefix sum before the chunk, base**lo, base**-lo
            for chunk in range(len(edges) - 1):
                lo = chunk * size
                m = max(0, min(size, len(data) - lo))
                np.multiply(data[lo:lo + m], power[:m], out=terms[:m])
                np.cumsum(terms[:m], out=sums[1:m + 1])  # sums[k]: the chunk's first k bytes
                a, b = start_bounds[chunk], start_bounds[chunk + 1]
                local = starts[a:b] - lo
                at_start[starts_order[a:b]] = sums[local] * np.uint64(scale) + np.uint64(carry)
                unscale[starts_order[a:b]] = inverse_power[local] * np.uint64(inv_scale)
                a, b = end_bounds[chunk], end_bounds[chunk + 1]
                at_end[ends_order[a:b]] = sums[ends[a:b] - lo] * np.uint64(scale) + np.uint64(carry)
                carry = (carry + int(sums[m]) * scale) & _MASK64
                scale, inv_scale = (scale * step) & _MASK64, (inv_scale * inv_step) & _MASK64
            out[row] = ((at_end - at_start) * unscale) ^ (lengths * np.uint64(0xD6E8FEB86659FD93))
    return out


def _same_edges(a: StringTable, rows_a: np.ndarray, b: StringTable, rows_b: np.ndarray) -> np.ndarray:
    """Whether rows of equal length agree in their first 8 and last 8 bytes (bool per pair)."""
    same = np.ones(len(rows_a), bool)
    if not len(rows_a) or not len(a.data) or not len(b.data):
        return same
    ends = [(t.starts[r], np.maximum(t.ends[r] - 1, t.starts[r])) for t, r in ((a, rows_a), (b, rows_b))]
    for k in range(8):  # one byte position at a time: arrays of one entry per row, never per byte
        picks = [(np.minimum(start + k, last), np.maximum(last - k, start)) for start, last in ends]
        for i in range(2):
            same &= a.data[np.minimum(picks[0][i], len(a.data) - 1)] == b.data[np.minimum(picks[1][i], len(b.data) - 1)]
    return same


def match_rows(names: StringTable, numbers: np.ndarray, key_names: StringTable, key_numbers: np.ndarray) -> np.ndarray:
    """For each (name, number) row, the index of the last equal row of the keys, or -1.

    The lookup a dict keyed by ``(name, number)`` gives, without building one.
    Rows match when their numbers, lengths, a 64-bit hash of their bytes, and
    their first and last 8 bytes agree (distinct names passing all that: about
    one chance in 2**64 per pair). A key listed twice with different values:
    the later one, as a dict would keep it, unless the keys are the queries
    row for row (then row ``i`` is used for query ``i``).
    """
    found = np.full(len(names), -1, np.int64)
    if not len(names) or not len(key_names):
        return found
    numbers, key_numbers = np.asarray(numbers, np.int64), np.asarray(key_numbers, np.int64)
    lengths, key_lengths = names.lengths(), key_names.lengths()
    mix = np.uint64(0x94D049BB133111EB)
    query, keys = row_hashes(names, _HASH_BASES[:1])[0], row_hashes(key_names, _HASH_BASES[:1])[0]
    with np.errstate(over="ignore"):
        query ^= numbers.astype(np.uint64) * mix
        keys ^= key_numbers.astype(np.uint64) * mix
    if len(query) == len(keys) and np.array_equal(query, keys) and np.array_equal(lengths, key_lengths):
        candidates = hit = np.arange(len(query))  # the usual case: the rates kept in manifest order
    else:
        order = np.argsort(keys, kind="stable")  # equal keys keep file order: the last one is the one kept
        sorted_keys = keys[order]
        # sorted queries: numpy's binary search starts from the previous answer, far faster than random ones
        query_order = np.argsort(query)
        pos = np.empty(len(query), np.int64)
        pos[query_order] = np.searchsorted(sorted_keys, query[query_order], side="right") - 1
        hit = np.flatnonzero((pos >= 0) & (sorted_keys[np.maximum(pos, 0)] == query))
        candidates = order[pos[hit]]
    same = (numbers[hit] == key_numbers[candidates]) & (lengths[hit] == key_lengths[candidates])
    same &= _same_edges(names, hit, key_names, candidates)
    found[hit[same]] = candidates[same]
    return found


class IntListTable(Sequence[List[int]]):
    """Rows of a few integers (a clip's class indices) as one ``values`` array plus ``offsets``.

    Row ``i`` is ``values[offsets[i]:offsets[i + 1]]``; ``table[i]`` gives it
    as a ``list`` of ``int`` (as the list of lists it replaces), :meth:`row`
    as a numpy view.
    """

    __slots__ = ("values", "offsets")

    def __init__(self, values: np.ndarray, offsets: np.ndarray):
        self.values = np.asarray(values).reshape(-1)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        if self.offsets.ndim != 1 or len(self.offsets) == 0:
            raise ValueError("offsets must be a 1-D array of rows + 1 positions")

    @classmethod
    def from_lists(cls, rows: Iterable[Sequence[int]], dtype=np.int32) -> "IntListTable":
        rows = list(rows)
        lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        values = np.fromiter((v for row in rows for v in row), dtype=dtype, count=int(lengths.sum()))
        return cls(values, _as_offsets(lengths))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __reduce__(self):
        return (type(self), (self.values, self.offsets))

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def row(self, index: int) -> np.ndarray:
        i = _row_index(index, len(self))
        return self.values[self.offsets[i]:self.offsets[i + 1]]

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            return self.row(key).tolist()
        return self.take(_select(key, len(self)))

    def take(self, rows) -> "IntListTable":
        """The rows ``rows`` (int indices or a bool mask), in that order, as a new table."""
        rows = _select(rows, len(self))
        starts, lengths = self.offsets[rows], self.lengths()[rows]
        offsets = _as_offsets(lengths)
        # each kept value's position: its row's start plus its place in the row
        index = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1], dtype=np.int64)
        return IntListTable(self.values[index], offsets)

    def __iter__(self) -> Iterator[List[int]]:
        for i in range(len(self)):
            yield self.row(i).tolist()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (IntListTable, list, tuple)):
            return len(self) == len(other) and all(a == list(b) for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None

    def __repr__(self) -> str:
        return f"IntListTable(rows={len(self)}, values={len(self.values)})"
