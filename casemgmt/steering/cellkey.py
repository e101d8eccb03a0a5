"""Figures on demand between releases, perturbed by the Cell Key Method.

A working group asking about one town between two releases must not get live counts: a count
suppressed in a release, asked again with a slightly different filter, would give it away, and
complementary suppression chosen per request would differ from request to request. Statistical
offices answer flexible tables with the Cell Key Method (the ESS handbook on statistical
disclosure control; the ABS TableBuilder; the ONS for the 2021 census; Giessing and Tent for
German official statistics):

* every person has a **record key**, a random number in [0, 1) drawn once and stored
  (``persons.record_key``; never shown);
* the **cell key** of a cell is the sum of the record keys of the distinct persons in it,
  modulo 1: the same persons give the same cell key in whichever table and request;
* the **perturbation** is looked up in a table (``on_demand.ptable`` in policies/steering.yaml)
  by the cell's count and its cell key. So the same cell always gets the same noise, and asking
  again, or through another table, averages nothing away.

The ptable is checked at start: unbiased rows, and no published count in 1..k-1 (a small cell
becomes 0 or at least k). Totals are perturbed as cells of their own and are therefore not the
sum of the published parts. This module is pure.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

Ptable = Sequence[Sequence[tuple[float, int]]]


def cell_key(record_keys: Iterable[float]) -> float:
    """Sum of the record keys modulo 1. ``math.fsum`` rounds the exact sum once, so the key
    does not depend on the order of the persons."""
    return math.fsum(record_keys) % 1.0


def noise(count: int, key: float, ptable: Ptable) -> int:
    """The perturbation of a cell with ``count`` persons and cell key ``key``: the row of the
    count (the last row for larger counts), the interval the key falls into."""
    if count < 0:
        raise ValueError("a count cannot be negative")
    if count == 0:
        return 0
    if not 0 <= key < 1:
        raise ValueError(f"a cell key lies in [0, 1), got {key!r}")
    row = ptable[min(count, len(ptable)) - 1]
    chosen = row[0][1]
    for start, value in row:
        if key >= start:
            chosen = value
        else:
            break
    return chosen


def perturbed(count: int, record_keys: Iterable[float], ptable: Ptable) -> int:
    """The published value of a cell: its count plus the noise its persons' keys select."""
    keys = list(record_keys)
    if len(keys) != count:
        raise ValueError("one record key per person in the cell")
    return count + noise(count, cell_key(keys), ptable)
