"""Statistical disclosure control for the steering group's report (DOMAIN.md section 9).

The report publishes tables of counts of distinct persons. This module decides which cells may be
shown. It is pure: no I/O, no database, standard library only.

Model
-----
A :class:`Grid` holds cells ``{key: count}`` and additive relations ``total = sum(parts)``. A key
is any hashable value (e.g. ``("barrier_by_town", "wittmar", "language")``). Relations may be
nested (town -> Kreis, quarter -> year), and one cell may appear in many relations (row and
column of a table, the same grand total in two breakdowns).

Rules
-----
* A cell with ``0 < n < k`` is suppressed (primary suppression). Zero cells are published and
  never suppressed, so a reader knows that every suppressed cell is at least 1.
* Further cells are suppressed (complementary suppression) until the attacker below cannot work
  out any suppressed cell exactly.
* Suppressed cells are rendered as ``"."``, as in official German statistics.

The attacker
------------
:func:`attack` knows every published value, every relation, that values are non-negative
integers, that zeros are never suppressed, and (conservatively) which suppressed cells are primary:
a primary cell lies in ``1..k-1``; any other suppressed cell therefore lies in ``k..``. It uses

1. exact linear algebra over the integers: a cell is determined when its unit vector lies in the
   row space of the equations restricted to the unknowns (read off a fully reduced echelon form);
2. interval bound propagation over each relation to a fixed point, starting from the bounds above;
3. exact linear-programming reasoning: a cell is pinned when no feasible direction at a point of
   the attacker's polytope moves it. Stage 2 misses cases where a *combination* of relations
   together with the bounds pins a cell (e.g. a derived ``a - b = 1`` with ``a <= 2`` and
   ``b >= 1``); stage 3 finds every cell that linear programming would pin.

A cell whose interval collapses to one value is disclosed. :func:`protect` suppresses until
stage 3 pins nothing. The attacker is sound (every reported bound holds for the true table) and
complete for linear reasoning; it does not exploit integrality beyond that, which only matters
when a polytope's extreme points are not integral (possible in tables of three or more
dimensions, never in two-dimensional tables with margins, whose constraint matrices are totally
unimodular). The tests cross-check it against an exhaustive integer search on small tables.

Some tables cannot be protected under this attacker whatever is suppressed, e.g. a town total of
4 made up of four cells of 1 with k = 5: the attacker knows the total is at most 4 and each part at
least 1. :func:`protect` raises :class:`UnprotectableError` for those (or reports them with
``on_unprotectable="flag"``); the report builder must then coarsen or drop the breakdown.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from itertools import product
from typing import Literal

CellKey = Hashable

PRIMARY = "primary"
COMPLEMENTARY = "complementary"
# Suppressed because an earlier release of the same cells suppressed them: publishing such a cell
# now would disclose it, or its complement (casemgmt.steering.releases).
EARLIER = "earlier_release"
SUPPRESSED = "."
TOTAL = "total"

_INF = math.inf
# Bound propagation tightens integer bounds, so it always stops; the cap only guards against a
# pathological system creeping towards its fixed point one unit at a time.
_PROPAGATION_STEPS_PER_RELATION = 10_000


# --------------------------------------------------------------------------------------------
# Public data types
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Relation:
    """``total = sum(parts)``. ``name`` labels the relation in error messages."""

    total: CellKey
    parts: tuple[CellKey, ...]
    name: str | None = None

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        return f"{self.total!r} = sum of {len(self.parts)} parts"


@dataclass(slots=True)
class Grid:
    """The input to :func:`protect`: cells and the additive relations between them.

    Only declare relations that hold exactly. Counts of distinct persons are additive only when
    the categories partition the persons; a person counted under two barriers makes the barrier
    total smaller than the sum of its parts, and such a relation is rejected as inconsistent.
    Two cells that mean the same number in different tables must share a key or be linked by a
    single-part relation, otherwise the protection cannot see that they are equal.
    """

    cells: dict[CellKey, int] = field(default_factory=dict)
    relations: list[Relation] = field(default_factory=list)

    def add_cell(self, key: CellKey, value: int) -> CellKey:
        """Add a cell; adding the same key again with the same value is allowed."""
        _check_count(key, value)
        if key in self.cells and self.cells[key] != value:
            raise ValueError(f"cell {key!r} added twice with different values")
        self.cells[key] = value
        return key

    def add_relation(
        self, total: CellKey, parts: Iterable[CellKey], name: str | None = None
    ) -> Relation:
        """Declare ``total = sum(parts)``; checked when the grid is protected."""
        relation = Relation(total, tuple(parts), name)
        self.relations.append(relation)
        return relation

    def add_table(
        self,
        name: Hashable,
        dims: Sequence[Sequence[Hashable]],
        counts: Mapping[tuple[Hashable, ...], int],
        *,
        total: Hashable = TOTAL,
    ) -> None:
        """Add an n-dimensional table with all its margins, computed by summation.

        Cells are keyed ``(name, label_1, ..., label_n)`` where a label is a category of that
        dimension or ``total``. ``counts`` holds the inner cells; missing ones are 0. Every line
        of the table (one dimension varying, the others fixed, margins included) becomes a
        relation. Use this only when the categories partition the persons.
        """
        dims = [tuple(d) for d in dims]
        if not dims:
            raise ValueError(f"table {name!r} needs at least one dimension")
        for i, d in enumerate(dims):
            if not d:
                raise ValueError(f"table {name!r}: dimension {i} has no categories")
            if len(set(d)) != len(d):
                raise ValueError(f"table {name!r}: dimension {i} repeats a category")
            if total in d:
                raise ValueError(f"table {name!r}: dimension {i} uses the total label {total!r}")
        valid = set(product(*dims))
        for labels, value in counts.items():
            if labels not in valid:
                raise ValueError(f"table {name!r}: {labels!r} is not a cell of the table")
            _check_count((name, *labels), value)
        axes = [(*d, total) for d in dims]
        values: dict[tuple[Hashable, ...], int] = {}
        for labels in product(*axes):
            inner = product(*(d if lab == total else (lab,) for d, lab in zip(dims, labels)))
            values[labels] = sum(counts.get(cell, 0) for cell in inner)
        for labels, value in values.items():
            self.add_cell((name, *labels), value)
        for axis, d in enumerate(dims):
            for labels in values:
                if labels[axis] != total:
                    continue
                parts = [(name, *labels[:axis], c, *labels[axis + 1 :]) for c in d]
                self.add_relation(
                    (name, *labels), parts, name=f"{name}: sum over dimension {axis} at {labels!r}"
                )


@dataclass(frozen=True, slots=True)
class Bounds:
    """What the attacker knows about a suppressed cell: ``low <= value <= high``."""

    low: int
    high: int | None  # None: no upper bound

    @property
    def exact(self) -> bool:
        return self.high is not None and self.low == self.high


@dataclass(frozen=True, slots=True)
class Suppression:
    """Why a cell is suppressed: ``reason`` is ``"primary"`` or ``"complementary"``; a
    complementary suppression names the cell it protects and the relation it was chosen in."""

    reason: str
    protects: CellKey | None = None  # the cell exposed when this one was chosen
    relation: str | None = None


@dataclass(frozen=True)
class Protected:
    """The result of :func:`protect`. Holds no value of a suppressed cell.

    ``published`` maps every cell, in grid order, to its value or to None when suppressed.
    ``unprotectable`` lists cells the attacker can still work out whatever is suppressed (only
    with ``on_unprotectable="flag"``; otherwise :func:`protect` raises).
    """

    k: int
    published: dict[CellKey, int | None]
    suppressions: dict[CellKey, Suppression]
    relations: tuple[Relation, ...]
    unprotectable: tuple[CellKey, ...] = ()

    def value(self, key: CellKey) -> int | None:
        return self.published[key]

    def is_suppressed(self, key: CellKey) -> bool:
        return self.published[key] is None

    def render(self, key: CellKey) -> str:
        return render(self.published[key])

    @property
    def primary(self) -> tuple[CellKey, ...]:
        return tuple(c for c, s in self.suppressions.items() if s.reason == PRIMARY)

    @property
    def complementary(self) -> tuple[CellKey, ...]:
        return tuple(c for c, s in self.suppressions.items() if s.reason == COMPLEMENTARY)

    def attack(self, witness: Mapping[CellKey, int] | None = None) -> dict[CellKey, Bounds]:
        """Run :func:`attack` on this publication, with knowledge of the primary cells. Pass the
        original cells as ``witness`` to spare the attacker its search for a consistent table."""
        return attack(self.published, self.relations, self.k, primary=self.primary, witness=witness)


class UnprotectableError(ValueError):
    """Some suppressed cells can be worked out even if every non-zero cell is suppressed."""

    def __init__(self, cells: Sequence[CellKey], relations: Sequence[str]):
        self.cells = tuple(cells)
        self.relations = tuple(relations)
        shown = ", ".join(repr(c) for c in self.cells[:5])
        more = f" and {len(self.cells) - 5} more" if len(self.cells) > 5 else ""
        rels = "; ".join(self.relations[:5])
        super().__init__(
            f"cells {shown}{more} can be derived exactly even with every non-zero cell "
            f"suppressed (relations: {rels}); coarsen or drop this breakdown"
        )


# --------------------------------------------------------------------------------------------
# Small helpers for the report
# --------------------------------------------------------------------------------------------


def render(value: int | float | None) -> str:
    """``"."`` for a suppressed value, the number otherwise."""
    if value is None:
        return SUPPRESSED
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"cannot render {value!r}")
    return str(value)


def percentile_or_none(
    values: Sequence[float], q: float, k: int, *, persons: int | None = None
) -> float | None:
    """The q-th percentile (0 <= q <= 100) of ``values``, or None when fewer than ``k`` persons.

    Linear interpolation between closest ranks (Hyndman and Fan type 7, numpy's default): with
    the sorted values x_0..x_{n-1} and h = (n-1)*q/100, the result is
    x_floor(h) + (h - floor(h)) * (x_floor(h)+1 - x_floor(h)).

    ``persons`` is the number of distinct persons behind ``values`` when it differs from
    ``len(values)`` (e.g. several handovers of one person); the threshold applies to persons.
    Note that q = 0 and q = 100 are single persons' values.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if not 0 <= q <= 100:
        raise ValueError(f"q must lie in 0..100, got {q!r}")
    data = sorted(values)
    for v in data:
        if isinstance(v, bool) or not isinstance(v, int | float | Fraction) or v != v:
            raise ValueError(f"not a number: {v!r}")
    count = len(data) if persons is None else persons
    if persons is not None and (persons < 0 or (persons == 0 and data)):
        raise ValueError(f"persons must be a positive count, got {persons!r}")
    if count < k or not data:
        return None
    h = Fraction(len(data) - 1) * Fraction(q) / 100
    low = math.floor(h)
    if low + 1 >= len(data):
        return float(data[low])
    frac = h - low
    return float(data[low] + frac * (Fraction(data[low + 1]) - Fraction(data[low])))


# --------------------------------------------------------------------------------------------
# Indexed form: cells are numbered in grid order, which also makes every choice deterministic
# --------------------------------------------------------------------------------------------


class _Inconsistent(Exception):
    def __init__(self, relation: int | None):
        self.relation = relation


@dataclass(slots=True)
class _Index:
    keys: list[CellKey]
    pos: dict[CellKey, int]
    rel_total: list[int]
    rel_parts: list[tuple[int, ...]]
    rel_labels: list[str]
    cell_rels: list[tuple[int, ...]]

    def rel_cells(self, r: int) -> tuple[int, ...]:
        return (self.rel_total[r], *self.rel_parts[r])


def _check_count(key: CellKey, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"cell {key!r}: value must be an int, got {value!r}")
    if value < 0:
        raise ValueError(f"cell {key!r}: value must not be negative, got {value}")


def _check_k(k: object) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return k


def _index(keys: Iterable[CellKey], relations: Iterable[Relation]) -> _Index:
    keys = list(keys)
    pos = {key: i for i, key in enumerate(keys)}
    rel_total: list[int] = []
    rel_parts: list[tuple[int, ...]] = []
    labels: list[str] = []
    cell_rels: list[list[int]] = [[] for _ in keys]
    for relation in relations:
        if not isinstance(relation, Relation):
            raise ValueError(f"not a Relation: {relation!r}")
        label = relation.label
        if not relation.parts:
            raise ValueError(f"relation {label}: has no parts")
        for key in (relation.total, *relation.parts):
            if key not in pos:
                raise ValueError(f"relation {label}: unknown cell {key!r}")
        if len(set(relation.parts)) != len(relation.parts):
            raise ValueError(f"relation {label}: a part is listed twice")
        if relation.total in relation.parts:
            raise ValueError(f"relation {label}: the total is also one of its parts")
        r = len(rel_total)
        rel_total.append(pos[relation.total])
        rel_parts.append(tuple(pos[p] for p in relation.parts))
        labels.append(label)
        for c in (rel_total[r], *rel_parts[r]):
            cell_rels[c].append(r)
    return _Index(keys, pos, rel_total, rel_parts, labels, [tuple(r) for r in cell_rels])


# --------------------------------------------------------------------------------------------
# The attacker, on the indexed form
# --------------------------------------------------------------------------------------------


def _eliminate(
    row: dict[int, int], b: int, prow: dict[int, int], pb: int, col: int
) -> tuple[dict[int, int], int]:
    """Remove ``col`` from ``row`` using ``prow``; integers only, divided by their gcd."""
    a, p = row[col], prow[col]
    if p == 1 or p == -1:
        # The common case with these sparse +-1 systems: no scaling, nothing to divide.
        mp = a * p
        new = dict(row)
        for c, v in prow.items():
            w = new.get(c, 0) - v * mp
            if w:
                new[c] = w
            else:
                del new[c]
        return new, b - pb * mp
    g = math.gcd(a, p)
    ma, mp = p // g, a // g
    new = {c: v * ma for c, v in row.items()}
    for c, v in prow.items():
        w = new.get(c, 0) - v * mp
        if w:
            new[c] = w
        else:
            new.pop(c, None)
    nb = b * ma - pb * mp
    g = math.gcd(nb, *new.values())
    if g > 1:
        new = {c: v // g for c, v in new.items()}
        nb //= g
    return new, nb


def _determined(equations: Iterable[tuple[int | None, dict[int, int], int]]) -> dict[int, int]:
    """Unknowns fixed by the equations alone, with their values.

    Keeps the system in fully reduced echelon form: each pivot row holds its pivot and free
    columns only. A variable is determined iff it is a pivot whose row has no free column, i.e.
    its unit vector lies in the row space.
    """
    rows: dict[int, dict[int, int]] = {}
    rhs: dict[int, int] = {}
    occurs: dict[int, set[int]] = {}  # free column -> pivots whose rows mention it
    # Short rows first keeps the fill-in low (three times faster on 3-dimensional tables).
    for relation, coeffs, b in sorted(equations, key=lambda e: len(e[1])):
        row = dict(coeffs)
        for p in [c for c in row if c in rows]:
            row, b = _eliminate(row, b, rows[p], rhs[p], p)
        if not row:
            if b:
                raise _Inconsistent(relation)
            continue
        # Markowitz-style: a unit coefficient in the column met least often keeps fill-in low.
        pivot = min(row, key=lambda c: (abs(row[c]) != 1, len(occurs.get(c, ())), c))
        if row[pivot] < 0:
            row = {c: -v for c, v in row.items()}
            b = -b
        for q in sorted(occurs.pop(pivot, ())):
            old = rows[q]
            new, nb = _eliminate(old, rhs[q], row, b, pivot)
            for c in old:
                if c != q and c != pivot:
                    occurs[c].discard(q)
            for c in new:
                if c != q:
                    occurs.setdefault(c, set()).add(q)
            rows[q], rhs[q] = new, nb
        rows[pivot], rhs[pivot] = row, b
        for c in row:
            if c != pivot:
                occurs.setdefault(c, set()).add(pivot)
    out: dict[int, int] = {}
    for p, row in rows.items():
        if len(row) == 1:
            value, rest = divmod(rhs[p], row[p])
            if rest:
                raise _Inconsistent(None)
            out[p] = value
    return out


@dataclass(slots=True)
class _Inference:
    low: dict[int, float]
    high: dict[int, float]
    # For a pinned cell: the relations that gave its last bounds (empty: the prior alone).
    culprits: dict[int, tuple[int, ...]]


def _bounds(
    ix: _Index,
    value: Sequence[int | None],
    unknowns: Collection[int],
    relations: Sequence[int],
    prior: Mapping[int, tuple[int, float]],
) -> _Inference:
    """Stages 1 and 2 of the attacker: linear algebra and bound propagation, repeated while
    either pins a new cell. ``value`` is read only for cells that are not unknown."""
    unknown = set(unknowns)
    in_scope = set(relations)
    low = {x: prior[x][0] for x in unknown}
    high = {x: prior[x][1] for x in unknown}
    low_by: dict[int, int] = {}
    high_by: dict[int, int] = {}
    culprits: dict[int, tuple[int, ...]] = {}
    fixed: dict[int, int] = {}
    for x in unknown:
        if low[x] == high[x]:
            fixed[x] = int(low[x])
            culprits[x] = ()
        elif low[x] > high[x]:
            raise _Inconsistent(None)

    def known(c: int) -> int | None:
        if c in unknown:
            return fixed.get(c)
        return value[c]

    while True:
        for x, v in sorted(_determined(_equations(ix, relations, known)).items()):
            if x in fixed:
                continue
            if not low[x] <= v <= high[x]:
                raise _Inconsistent(None)
            low[x] = high[x] = fixed[x] = v
            culprits[x] = tuple(r for r in ix.cell_rels[x] if r in in_scope)
        pinned = _propagate(ix, value, unknown, relations, low, high, low_by, high_by)
        new = [x for x in pinned if x not in fixed]
        if not new:
            break
        for x in new:
            fixed[x] = int(low[x])
            culprits[x] = tuple(sorted({r for r in (low_by.get(x), high_by.get(x)) if r is not None}))
    return _Inference(low, high, culprits)


def _equations(
    ix: _Index, relations: Iterable[int], known: Callable[[int], int | None]
) -> list[tuple[int, dict[int, int], int]]:
    """Each relation as ``sum(unknown parts) - unknown total = rhs``."""
    out = []
    for r in relations:
        coeffs: dict[int, int] = {}
        t = ix.rel_total[r]
        tv = known(t)
        b = tv if tv is not None else 0
        if tv is None:
            coeffs[t] = -1
        for p in ix.rel_parts[r]:
            pv = known(p)
            if pv is None:
                coeffs[p] = 1
            else:
                b -= pv
        if coeffs:
            out.append((r, coeffs, b))
        elif b:
            raise _Inconsistent(r)
    return out


def _propagate(
    ix: _Index,
    value: Sequence[int | None],
    unknown: set[int],
    relations: Sequence[int],
    low: dict[int, float],
    high: dict[int, float],
    low_by: dict[int, int],
    high_by: dict[int, int],
) -> list[int]:
    """Tighten bounds relation by relation until nothing changes; return the pinned cells.

    For ``total = sum(parts)``: the total lies in [sum of the parts' lows, sum of their highs],
    and each part in [total's low - other parts' highs, total's high - other parts' lows].
    """
    in_scope = set(relations)
    queue = deque(relations)
    queued = set(relations)
    budget = _PROPAGATION_STEPS_PER_RELATION * max(1, len(relations))
    changed: set[int] = set()

    def bounds(c: int) -> tuple[float, float]:
        if c in unknown:
            return low[c], high[c]
        v = value[c]
        return v, v  # type: ignore[return-value]

    def tighten(c: int, lo: float, hi: float, r: int) -> None:
        if lo > low[c]:
            low[c] = lo
            low_by[c] = r
            changed.add(c)
        if hi < high[c]:
            high[c] = hi
            high_by[c] = r
            changed.add(c)
        if low[c] > high[c]:
            raise _Inconsistent(r)

    while queue:
        budget -= 1
        if budget < 0:
            raise RuntimeError("bound propagation did not settle; please report this table")
        r = queue.popleft()
        queued.discard(r)
        changed.clear()
        t = ix.rel_total[r]
        parts = ix.rel_parts[r]
        parts_low = 0
        parts_high = 0  # finite highs only; ``unbounded`` counts the others
        unbounded = 0
        for p in parts:
            lo, hi = bounds(p)
            parts_low += lo
            if hi == _INF:
                unbounded += 1
            else:
                parts_high += hi
        if t in unknown:
            tighten(t, parts_low, _INF if unbounded else parts_high, r)
        t_low, t_high = bounds(t)
        if (t_low > parts_high and not unbounded) or t_high < parts_low:
            raise _Inconsistent(r)
        for p in parts:
            if p not in unknown:
                continue
            lo, hi = low[p], high[p]
            new_lo = lo
            if not unbounded - (hi == _INF):
                new_lo = max(lo, t_low - (parts_high - (0 if hi == _INF else hi)))
            new_hi = min(hi, t_high - (parts_low - lo))
            tighten(p, new_lo, new_hi, r)
        for c in changed:
            for s in ix.cell_rels[c]:
                if s in in_scope and s not in queued:
                    queued.add(s)
                    queue.append(s)
    # Bounds are integers or infinite; keep them ints so they compare and print cleanly.
    for x in unknown:
        if low[x] != _INF:
            low[x] = int(low[x])
        if high[x] != _INF:
            high[x] = int(high[x])
    return sorted(x for x in unknown if low[x] == high[x])


def _simplex_max(
    objective: Sequence[int], rows: Sequence[Mapping[int, int]], rhs: Sequence[int]
) -> list[Fraction]:
    """Maximise ``objective . x`` subject to ``rows x <= rhs``, ``x >= 0``, where ``rhs >= 0``
    (the origin is feasible) and the optimum is bounded. Exact: sparse integer rows, each with
    its own positive denominator; Bland's rule, so it cannot cycle. Rows map column -> coefficient."""
    n = len(objective)
    m = len(rows)
    rhs_col = -1
    table: list[dict[int, int]] = []
    for r, row in enumerate(rows):
        entry = {c: v for c, v in row.items() if v}
        entry[n + r] = 1  # slack
        if rhs[r]:
            entry[rhs_col] = rhs[r]
        table.append(entry)
    den = [1] * m
    cost = {j: -v for j, v in enumerate(objective) if v}
    basis = [n + r for r in range(m)]

    def combine(row: dict[int, int], f: int, prow: dict[int, int], p: int) -> dict[int, int]:
        new = {c: v * p for c, v in row.items()} if p != 1 else dict(row)
        for c, v in prow.items():
            w = new.get(c, 0) - f * v
            if w:
                new[c] = w
            else:
                new.pop(c, None)
        return new

    # Dantzig's rule (most negative reduced cost) is fast; the problems are very degenerate, so
    # after a run of pivots that do not improve the objective switch to Bland's rule, which
    # cannot cycle, until the objective improves again.
    stalled = 0
    while True:
        improving = [(v, j) for j, v in cost.items() if v < 0 and j != rhs_col]
        if not improving:
            break
        enter = min(j for _, j in improving) if stalled >= 20 else min(improving)[1]
        leave = None
        for r in range(m):
            a = table[r].get(enter, 0)
            if a > 0:
                if leave is None:
                    leave = r
                    continue
                # Denominators cancel in the ratio rhs/a, so compare the numerators crosswise.
                lhs = table[r].get(rhs_col, 0) * table[leave][enter]
                other = table[leave].get(rhs_col, 0) * a
                if lhs < other or (lhs == other and basis[r] < basis[leave]):
                    leave = r
        if leave is None:
            raise RuntimeError("unbounded linear programme")  # cannot happen for our problems
        prow = table[leave]
        p = prow[enter]
        stalled = stalled + 1 if not prow.get(rhs_col) else 0
        for r in range(m):
            if r != leave and table[r].get(enter):
                new = combine(table[r], table[r][enter], prow, p)
                if p != 1:  # with a unit pivot the denominator stays and nothing needs dividing
                    d = den[r] * p
                    g = math.gcd(d, *new.values())
                    new = {c: v // g for c, v in new.items()}
                    den[r] = d // g
                table[r] = new
        f = cost.get(enter)
        if f:
            new = combine(cost, f, prow, p)
            if p != 1:
                g = math.gcd(*new.values()) if new else 1
                new = {c: v // g for c, v in new.items()}
            cost = new
        den[leave] = p
        g = math.gcd(p, *prow.values())
        if g > 1:
            table[leave] = {c: v // g for c, v in prow.items()}
            den[leave] = p // g
        basis[leave] = enter
    x = [Fraction(0)] * n
    for r, j in enumerate(basis):
        if j < n:
            x[j] = Fraction(table[r].get(rhs_col, 0), den[r])
    return x


# The elimination helpers below work on sparse rows {column: coefficient}. Columns >= 0 are
# cells. Negative columns, when present, are tags that record which relations a row was combined
# from (tag -(r + 1) for relation r); they ride along but are never pivots.


def _real(row: Mapping[int, int]) -> list[int]:
    return [c for c in row if c >= 0]


def _reduced(rows: Iterable[dict[int, int]]) -> dict[int, dict[int, int]]:
    """Fully reduced echelon form of homogeneous rows: pivot column -> row."""
    basis: dict[int, dict[int, int]] = {}
    for row in sorted(rows, key=len):
        row = dict(row)
        for c in [c for c in row if c in basis]:
            row, _ = _eliminate(row, 0, basis[c], 0, c)
        real = _real(row)
        if not real:
            continue
        pivot = min(real, key=lambda c: (abs(row[c]) != 1, c))
        for q, other in basis.items():
            if pivot in other:
                basis[q], _ = _eliminate(other, 0, row, 0, pivot)
        basis[pivot] = row
    return basis


def _without(rows: Iterable[dict[int, int]], cols: Collection[int]) -> list[dict[int, int]]:
    """A basis of the combinations of ``rows`` that vanish on ``cols``."""
    pivots: list[tuple[int, dict[int, int]]] = []
    kept: list[dict[int, int]] = []
    for row in sorted(rows, key=len):
        row = dict(row)
        for c, prow in pivots:
            if c in row:
                row, _ = _eliminate(row, 0, prow, 0, c)
        real = _real(row)
        if not real:
            continue
        hit = [c for c in real if c in cols]
        if hit:
            pivots.append((min(hit), row))
        else:
            kept.append(row)
    return kept


def _one_signed(row: Mapping[int, int]) -> bool:
    signs = {v > 0 for c, v in row.items() if c >= 0}
    return len(signs) == 1


def _tags(row: Mapping[int, int]) -> dict[int, int]:
    return {c: v for c, v in row.items() if c < 0}


def _stuck(
    derived: list[dict[int, int]], sign: Mapping[int, int]
) -> tuple[set[int], dict[int, dict[int, Fraction]]]:
    """Tight cells that no feasible direction can move, each with the tags of a combination of
    rows that pins it (empty without tags).

    With the rows oriented by ``sign`` (every tight cell may only increase), a cell is stuck iff
    some combination of the rows is non-negative and positive on it (Farkas). Most cases are
    settled by two cheap rules applied in turn: a one-signed row makes its whole support stuck
    (fix those cells); a non-negative direction in the kernel shows its support can move (such
    cells may then be treated as free and are projected out). Whatever is left goes to an LP.
    """
    rows = [{c: (sign[c] * v if c >= 0 else v) for c, v in row.items()} for row in derived]
    stuck: set[int] = set()
    why: dict[int, dict[int, Fraction]] = {}
    while rows:
        basis = _reduced(rows)
        rows = list(basis.values())
        pinned: set[int] = set()
        for row in rows:
            if _one_signed(row):
                for c in _real(row):
                    if c not in pinned:
                        pinned.add(c)
                        why[c] = {t: Fraction(v) for t, v in _tags(row).items()}
        if pinned:
            stuck |= pinned
            rows = [{c: v for c, v in row.items() if c not in pinned} for row in rows]
            rows = [row for row in rows if _real(row)]
            continue
        # Kernel vector of a free column f: 1 at f, -row[f]/row[p] at each pivot p whose row
        # mentions f. Non-negative iff every such row has f and p with opposite signs.
        free: set[int] = set()
        for f in sorted({c for row in rows for c in _real(row)} - basis.keys()):
            mentions = [(p, row) for p, row in basis.items() if f in row]
            if all(row[f] * row[p] < 0 for p, row in mentions):
                free.add(f)
                free.update(p for p, _ in mentions)
        if not free:
            break
        rows = _without(rows, free)
    if not rows:
        return stuck, why
    # The general case: one small LP per block of rows that share cells.
    blocks: dict[int, list[dict[int, int]]] = {}
    owner: dict[int, int] = {}
    for i, row in enumerate(rows):
        targets = sorted({owner[c] for c in _real(row) if c in owner})
        home = targets[0] if targets else i
        merged = [row]
        for t in targets:
            merged.extend(blocks.pop(t))
        blocks[home] = merged
        for r in merged:
            for c in _real(r):
                owner[c] = home
    for block in blocks.values():
        cols = sorted({c for row in block for c in _real(row)})
        if _all_movable(block, cols):
            continue
        m, t = len(block), len(cols)
        # Variables y+ (m), y- (m), s (t): w = y.block with w_j >= s_j and 0 <= s_j <= 1,
        # maximising sum(s); then s_j = 1 exactly for the cells that cannot move.
        lp_rows: list[dict[int, int]] = []
        for j, c in enumerate(cols):
            row = {2 * m + j: 1}
            for i, brow in enumerate(block):
                v = brow.get(c, 0)
                if v:
                    row[i] = -v
                    row[m + i] = v
            lp_rows.append(row)
        for j in range(t):
            lp_rows.append({2 * m + j: 1})
        solution = _simplex_max([0] * (2 * m) + [1] * t, lp_rows, [0] * t + [1] * t)
        found = [c for j, c in enumerate(cols) if solution[2 * m + j] == 1]
        if found:
            combined: dict[int, Fraction] = {}
            for i, brow in enumerate(block):
                y = solution[i] - solution[m + i]
                if y:
                    for tag, v in _tags(brow).items():
                        combined[tag] = combined.get(tag, Fraction(0)) + y * v
            for c in found:
                why[c] = combined
            stuck.update(found)
    return stuck, why


def _all_movable(block: list[dict[int, int]], cols: list[int]) -> bool:
    """Whether some d >= 1 satisfies row . d = 0 for every row: then every cell can move and
    none is stuck (Gordan). Phase 1 of the simplex on d = 1 + e, e >= 0: each equation
    ``row . e = -row . 1`` gets its slack as artificial variable, and the slacks can all be
    driven to zero iff the system is feasible."""
    index = {c: j for j, c in enumerate(cols)}
    rows: list[dict[int, int]] = []
    rhs: list[int] = []
    objective = [0] * len(cols)
    for row in block:
        real = {index[c]: v for c, v in row.items() if c >= 0}
        b = -sum(real.values())
        if b < 0:
            real = {j: -v for j, v in real.items()}
            b = -b
        rows.append(real)
        rhs.append(b)
        for j, v in real.items():
            objective[j] += v
    solution = _simplex_max(objective, rows, rhs)
    reached = sum(objective[j] * v for j, v in enumerate(solution))
    return reached == sum(rhs)


def _analyse(
    ix: _Index,
    point: Mapping[int, int] | Sequence[int],
    unknowns: Collection[int],
    relations: Sequence[int],
    prior: Mapping[int, tuple[int, float]],
    tags: bool = False,
) -> tuple[set[int], dict[int, dict[int, Fraction]], list[dict[int, int]]]:
    """The direction analysis behind :func:`_lp_fixed`: stuck cells (with the tags of their
    certificates when ``tags``) and the direction equations."""
    sign: dict[int, int] = {}  # tight cell -> +1 at its lower bound, -1 at its upper bound
    stuck: set[int] = set()
    for x in unknowns:
        lo, hi = prior[x]
        v = point[x]
        if lo == hi:
            stuck.add(x)
        elif v == lo:
            sign[x] = 1
        elif v == hi:
            sign[x] = -1
    movable = set(unknowns) - stuck
    rows: list[dict[int, int]] = []
    for r in relations:
        row = {}
        t = ix.rel_total[r]
        if t in movable:
            row[t] = -1
        for p in ix.rel_parts[r]:
            if p in movable:
                row[p] = 1
        if row:
            if tags:
                row[-(r + 1)] = 1
            rows.append(row)
    why: dict[int, dict[int, Fraction]] = {}
    if sign:
        # Combinations of the equations free of non-tight cells.
        derived = _without(rows, movable - sign.keys())
        if derived:
            found, why = _stuck(derived, sign)
            stuck |= found
    return stuck, why, rows


def _lp_fixed(
    ix: _Index,
    point: Mapping[int, int] | Sequence[int],
    unknowns: Collection[int],
    relations: Sequence[int],
    prior: Mapping[int, tuple[int, float]],
) -> set[int]:
    """Stage 3 of the attacker: the unknowns that take one value on the whole polytope
    {relations hold, prior bounds hold}, i.e. what linear programming would pin.

    ``point`` is any member of the polytope (for the protection: the true table). A cell is
    constant iff no feasible direction at ``point`` moves it. Directions are the null space of
    the equations, except that a cell sitting on its bound may move only inwards. A tight cell
    cannot move at all iff some combination of the equations involves tight cells only, all with
    the sign that pushes them outwards (Farkas). The remaining tight cells can all move inwards
    together, so after fixing the stuck ones the question is pure linear algebra again.
    """
    stuck, _, rows = _analyse(ix, point, unknowns, relations, prior)
    # Stuck cells no longer move: drop them from the direction equations.
    equations = []
    for row in rows:
        rest = {c: v for c, v in row.items() if c not in stuck}
        if rest:
            equations.append((None, rest, 0))
    return stuck | set(_determined(equations))


def _certificates(
    ix: _Index,
    point: Mapping[int, int] | Sequence[int],
    unknowns: Collection[int],
    relations: Sequence[int],
    prior: Mapping[int, tuple[int, float]],
    cells: Iterable[int],
) -> dict[int, dict[int, Fraction]]:
    """For each of ``cells`` that is pinned, the weights of a combination of relations that pins
    it (relation -> weight; empty when the prior alone pins it). Suppressing a published cell
    whose net coefficient in the combination is not zero breaks that particular derivation."""
    stuck, why, rows = _analyse(ix, point, unknowns, relations, prior, tags=True)
    basis: dict[int, dict[int, int]] | None = None
    out: dict[int, dict[int, Fraction]] = {}
    for x in cells:
        if x in why:
            weights = why[x]
        elif x in stuck:
            weights = {}
        else:
            if basis is None:
                basis = _reduced({c: v for c, v in row.items() if c not in stuck} for row in rows)
            row = basis.get(x, {})
            if _real(row) != [x]:
                continue
            weights = {t: Fraction(v) for t, v in _tags(row).items()}
        out[x] = {-t - 1: v for t, v in weights.items() if v}
    return out


def _find_point(
    ix: _Index,
    value: Sequence[int | None],
    unknowns: Sequence[int],
    relations: Sequence[int],
    prior: Mapping[int, tuple[int, float]],
    budget: int = 2_000,
) -> dict[int, int]:
    """Some integer table consistent with the publication, for :func:`_lp_fixed`: depth-first,
    fixing the unknown with the narrowest range and letting stages 1-2 narrow the rest."""
    nodes = 0

    def search(bounds: dict[int, tuple[int, float]]) -> dict[int, int] | None:
        nonlocal nodes
        nodes += 1
        if nodes > budget:
            raise RuntimeError(
                "no table consistent with the publication found within the search budget; "
                "pass witness= (e.g. the original table) to attack()"
            )
        try:
            inference = _bounds(ix, value, unknowns, relations, bounds)
        except _Inconsistent:
            return None
        free = [x for x in unknowns if inference.low[x] != inference.high[x]]
        if not free:
            return {x: int(inference.low[x]) for x in unknowns}
        x = min(free, key=lambda c: (inference.high[c] - inference.low[c], c))
        v = int(inference.low[x])
        while v <= inference.high[x]:
            narrowed = {c: (inference.low[c], inference.high[c]) for c in unknowns}
            narrowed[x] = (v, v)
            found = search(narrowed)  # type: ignore[arg-type]
            if found is not None:
                return found
            v += 1
        return None

    found = search(dict(prior))
    if found is None:
        raise _Inconsistent(None)
    return found


def _components(ix: _Index, unknown: set[int]) -> list[tuple[list[int], list[int]]]:
    """Group the unknowns that share relations; each group with the relations that touch it."""
    parent = {x: x for x in unknown}

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    touching: list[int] = []
    for r in range(len(ix.rel_total)):
        members = [c for c in ix.rel_cells(r) if c in unknown]
        if not members:
            continue
        touching.append(r)
        root = find(members[0])
        for c in members[1:]:
            other = find(c)
            if other != root:
                if other < root:
                    root, other = other, root
                parent[other] = root
    groups: dict[int, list[int]] = {}
    for x in sorted(unknown):
        groups.setdefault(find(x), []).append(x)
    rels: dict[int, list[int]] = {root: [] for root in groups}
    for r in touching:
        first = next(c for c in ix.rel_cells(r) if c in unknown)
        rels[find(first)].append(r)
    return [(groups[root], rels[root]) for root in sorted(groups)]


# --------------------------------------------------------------------------------------------
# Public attacker
# --------------------------------------------------------------------------------------------


def attack(
    published: Mapping[CellKey, int | None],
    relations: Iterable[Relation],
    k: int,
    *,
    primary: Collection[CellKey] | None = None,
    witness: Mapping[CellKey, int] | None = None,
    linear_programming: bool = True,
) -> dict[CellKey, Bounds]:
    """What an attacker can work out about each suppressed (None) cell of ``published``.

    Prior knowledge: values are non-negative integers and zeros are never suppressed, so every
    suppressed cell is at least 1. If ``primary`` is given, the attacker also knows which cells
    are primary: those lie in 1..k-1 and every other suppressed cell in k.. . Without it, every
    suppressed cell lies in 1.. .

    Stages: (1) exact linear algebra, (2) bound propagation, both repeated to a fixed point, and
    unless ``linear_programming=False``, (3) exact linear-programming reasoning, which also pins
    cells that only a combination of several relations together with the bounds gives away.
    Stage 3 needs one table consistent with the publication: ``witness`` (e.g. the original
    table; the result does not depend on which consistent table is given), otherwise one is
    searched for, which can be slow for large connected suppression patterns.

    Returns bounds for every suppressed cell; ``Bounds.exact`` means disclosed. The bounds of
    cells that are not disclosed are valid but not necessarily the tightest. Raises ValueError
    when the published values (or the witness) contradict a relation or the prior knowledge.
    """
    k = _check_k(k)
    ix = _index(published.keys(), relations)
    value: list[int | None] = []
    unknown: set[int] = set()
    for i, key in enumerate(ix.keys):
        v = published[key]
        if v is None:
            unknown.add(i)
        else:
            _check_count(key, v)
        value.append(v)
    primary_idx = set()
    for key in primary or ():
        if key not in ix.pos or ix.pos[key] not in unknown:
            raise ValueError(f"primary cell {key!r} is not a suppressed cell")
        primary_idx.add(ix.pos[key])
    prior: dict[int, tuple[int, float]] = {}
    for x in unknown:
        if primary is None:
            prior[x] = (1, _INF)
        elif x in primary_idx:
            prior[x] = (1, k - 1)
        else:
            prior[x] = (k, _INF)
    point: dict[int, int] | None = None
    if witness is not None:
        point = {}
        for x in sorted(unknown):
            key = ix.keys[x]
            if key not in witness:
                raise ValueError(f"witness lacks the suppressed cell {key!r}")
            _check_count(key, witness[key])
            if not prior[x][0] <= witness[key] <= prior[x][1]:
                raise ValueError(f"witness value of {key!r} contradicts the prior knowledge")
            point[x] = witness[key]
        for key, v in witness.items():
            if key in ix.pos and ix.pos[key] not in unknown and published[key] != v:
                raise ValueError(f"witness differs from the published value of {key!r}")
        full = [point[i] if i in unknown else value[i] for i in range(len(value))]
        for r, t in enumerate(ix.rel_total):
            if full[t] != sum(full[p] for p in ix.rel_parts[r]):  # type: ignore[misc]
                raise ValueError(f"witness contradicts the relation {ix.rel_labels[r]}")
    out: dict[int, tuple[float, float]] = {x: prior[x] for x in unknown}
    try:
        for r in range(len(ix.rel_total)):
            if all(c not in unknown for c in ix.rel_cells(r)):
                if value[ix.rel_total[r]] != sum(value[p] for p in ix.rel_parts[r]):  # type: ignore[misc]
                    raise _Inconsistent(r)
        for group, rels in _components(ix, unknown):
            inference = _bounds(ix, value, group, rels, prior)
            for x in group:
                out[x] = (inference.low[x], inference.high[x])
            if not linear_programming or all(out[x][0] == out[x][1] for x in group):
                continue
            here = point if point is not None else _find_point(ix, value, group, rels, prior)
            for x in _lp_fixed(ix, here, group, rels, prior):
                out[x] = (here[x], here[x])
    except _Inconsistent as exc:
        where = f"relation {ix.rel_labels[exc.relation]}" if exc.relation is not None else "relations"
        raise ValueError(f"published values contradict the {where}") from None
    return {
        ix.keys[x]: Bounds(int(lo), None if hi == _INF else int(hi))
        for x, (lo, hi) in sorted(out.items())
    }


def disclosed(bounds: Mapping[CellKey, Bounds]) -> list[CellKey]:
    """The cells an :func:`attack` result pins to one value."""
    return [key for key, b in bounds.items() if b.exact]


# --------------------------------------------------------------------------------------------
# Protection
# --------------------------------------------------------------------------------------------


def _levels(ix: _Index) -> list[int]:
    """Height of each cell in the hierarchy of totals: 0 for a cell that is no total, a row
    total 1, a grand total 2. Complementary suppression prefers low cells (margins carry more
    information). Cycles (only possible with zeros) are cut where they are met."""
    as_total: list[list[int]] = [[] for _ in ix.keys]
    for r, t in enumerate(ix.rel_total):
        as_total[t].append(r)
    level = [0] * len(ix.keys)
    state = [0] * len(ix.keys)  # 0 new, 1 on the stack, 2 done
    for start in range(len(ix.keys)):
        if state[start]:
            continue
        stack = [(start, iter([p for r in as_total[start] for p in ix.rel_parts[r]]))]
        state[start] = 1
        while stack:
            cell, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                state[cell] = 2
                if stack:
                    parent = stack[-1][0]
                    level[parent] = max(level[parent], level[cell] + 1)
                continue
            if state[child] == 0:
                state[child] = 1
                stack.append((child, iter([p for r in as_total[child] for p in ix.rel_parts[r]])))
            elif state[child] == 2:
                level[cell] = max(level[cell], level[child] + 1)
    return level


class _Protector:
    def __init__(self, ix: _Index, value: list[int], k: int, forced: Collection[int] = ()):
        self.forced = tuple(forced)
        self.ix = ix
        self.value = value
        self.k = k
        self.level = _levels(ix)
        self.unknown: set[int] = set()
        self.primary: set[int] = set()
        self.reasons: dict[int, Suppression] = {}
        self.added: list[int] = []  # complementary cells in the order they were chosen
        self.unknown_count = [0] * len(ix.rel_total)
        self.clean: set[frozenset[int]] = set()
        self.hopeless: set[int] = set()
        self.hopeless_relations: set[int] = set()
        self.max_checked: dict[int, frozenset[int]] = {}  # cell -> disclosed at max suppression

    # -- bookkeeping --------------------------------------------------------------------------

    def prior(self, x: int) -> tuple[int, float]:
        # Attacker model of the module docstring: primary in 1..k-1, any other suppressed cell
        # was a published non-zero cell of at least k. A hopeless cell is known to the attacker
        # anyway; stating it keeps it out of the linear programme.
        if x in self.hopeless:
            return (self.value[x], self.value[x])
        return (1, self.k - 1) if x in self.primary else (self.k, _INF)

    def suppress(self, x: int, reason: Suppression) -> None:
        self.unknown.add(x)
        self.reasons[x] = reason
        for r in self.ix.cell_rels[x]:
            self.unknown_count[r] += 1
        if reason.reason == COMPLEMENTARY and x not in self.added:
            self.added.append(x)

    def unsuppress(self, x: int) -> None:
        self.unknown.discard(x)
        del self.reasons[x]
        for r in self.ix.cell_rels[x]:
            self.unknown_count[r] -= 1

    def candidates(self, relations: Iterable[int]) -> list[tuple[int, int]]:
        """Published non-zero cells of ``relations`` with the first relation each was seen in."""
        seen: dict[int, int] = {}
        for r in relations:
            for c in self.ix.rel_cells(r):
                if c not in self.unknown and self.value[c] > 0 and c not in seen:
                    seen[c] = r
        return list(seen.items())

    def cost(self, c: int) -> tuple[int, Fraction, int]:
        # Lowest level first (never a grand total while a part would do), then the least
        # information per relation the cell joins that already has a suppression: such a cell
        # often closes a suppression cycle by itself. Ties go to grid order.
        linked = sum(1 for r in self.ix.cell_rels[c] if self.unknown_count[r])
        return (self.level[c], Fraction(self.value[c], max(1, linked)), c)

    def best(self, relations: Iterable[int]) -> tuple[int, int] | None:
        found = self.candidates(relations)
        if not found:
            return None
        return min(found, key=lambda item: self.cost(item[0]))

    # -- steps --------------------------------------------------------------------------------

    def singletons(self) -> None:
        """A relation with exactly one suppressed cell gives it away; add the cheapest partner."""
        ix = self.ix
        queue = deque(r for r in range(len(ix.rel_total)) if self.unknown_count[r] == 1)
        queued = set(queue)
        while queue:
            r = queue.popleft()
            queued.discard(r)
            if self.unknown_count[r] != 1:
                continue
            x = next(c for c in ix.rel_cells(r) if c in self.unknown)
            if x in self.hopeless:
                continue
            choice = self.best([r])
            if choice is None:
                continue  # only zeros besides x: impossible for consistent data; attack decides
            c, _ = choice
            self.suppress(c, Suppression(COMPLEMENTARY, ix.keys[x], ix.rel_labels[r]))
            for s in ix.cell_rels[c]:
                if self.unknown_count[s] == 1 and s not in queued:
                    queued.add(s)
                    queue.append(s)

    def inspect(self, group: list[int], rels: list[int]) -> list[int]:
        """Disclosed cells of one component (other than hopeless ones)."""
        key = frozenset(group)
        if key in self.clean:
            return []
        prior = {x: self.prior(x) for x in group}
        # The true table is a point of the attacker's polytope, so stage 3 needs no search; it
        # subsumes stages 1 and 2 for deciding *whether* a cell is pinned.
        found = sorted(_lp_fixed(self.ix, self.value, group, rels, prior) - self.hopeless)
        if not found:
            self.clean.add(key)
            return []
        return found

    def disclosures(self) -> list[tuple[list[int], list[int], list[int]]]:
        """Disclosed cells, by component."""
        out = []
        for group, rels in _components(self.ix, self.unknown):
            found = self.inspect(group, rels)
            if found:
                out.append((group, rels, found))
        return out

    def disclosed_at_max(self, x: int) -> frozenset[int]:
        """Cells disclosed when every non-zero cell connected to ``x`` is suppressed. Suppressing
        more never helps the attacker, so a cell disclosed here cannot be protected."""
        if x in self.max_checked:
            return self.max_checked[x]
        ix = self.ix
        cells = {x}
        rels: set[int] = set()
        frontier = [x]
        while frontier:
            nxt = []
            for c in frontier:
                for r in ix.cell_rels[c]:
                    if r in rels:
                        continue
                    rels.add(r)
                    for d in ix.rel_cells(r):
                        if d not in cells and self.value[d] > 0:
                            cells.add(d)
                            nxt.append(d)
            frontier = nxt
        prior = {c: ((1, self.k - 1) if 0 < self.value[c] < self.k else (self.k, _INF)) for c in cells}
        result = frozenset(_lp_fixed(ix, self.value, sorted(cells), sorted(rels), prior))
        for c in cells:
            self.max_checked[c] = result
        return result

    def net(self, weights: Mapping[int, Fraction]) -> dict[int, int]:
        """Net coefficient of each cell in a combination of relations (scaled to integers),
        with the first relation each cell was met in."""
        ix = self.ix
        scale = math.lcm(*(w.denominator for w in weights.values())) if weights else 1
        net: dict[int, int] = {}
        first: dict[int, int] = {}
        for r, w in sorted(weights.items()):
            v = int(w * scale)
            t = ix.rel_total[r]
            net[t] = net.get(t, 0) - v
            first.setdefault(t, r)
            for p in ix.rel_parts[r]:
                net[p] = net.get(p, 0) + v
                first.setdefault(p, r)
        return {c: first[c] for c, v in net.items() if v}

    def fix(self, x: int, group: list[int], rels: list[int], breakers: Mapping[int, int]) -> str | None:
        """Suppress one more cell to protect ``x`` (``"suppressed"``), or mark ``x`` as hopeless
        (``"hopeless"``); None if neither (``x`` is no longer exposed)."""
        ix = self.ix
        # Best: a cell that enters the combination of relations that pins x, so that this
        # derivation no longer works.
        found = [(c, r) for c, r in breakers.items() if c not in self.unknown and self.value[c] > 0]
        choice = min(found, key=lambda item: self.cost(item[0])) if found else None
        if choice is None:
            # Nothing published enters that derivation: make sure x can be protected at all.
            if x in self.disclosed_at_max(x):
                self.hopeless.add(x)
                self.hopeless_relations.update(set(breakers.values()) or set(ix.cell_rels[x]))
                return "hopeless"
            # Otherwise the relations that pinned x by bound propagation, then x's other
            # relations, then outwards.
            prior = {g: self.prior(g) for g in group}
            culprits = _bounds(ix, self.value, group, rels, prior).culprits.get(x)
            if culprits is None:
                culprits = tuple(r for r in ix.cell_rels[x] if r in rels)
            choice = self.best(culprits)
            if choice is None:
                seen = set(culprits)

                def around(relations: Iterable[int]) -> list[int]:
                    near = {s for r in relations for c in ix.rel_cells(r) for s in ix.cell_rels[c]}
                    return sorted(near - seen)

                frontier = [r for r in ix.cell_rels[x] if r not in seen] or around(seen)
                while choice is None and frontier:
                    seen.update(frontier)
                    choice = self.best(frontier)
                    frontier = around(frontier)
                if choice is None:
                    return None
        c, r = choice
        self.suppress(c, Suppression(COMPLEMENTARY, ix.keys[x], ix.rel_labels[r]))
        return "suppressed"

    def run(self) -> None:
        for i, v in enumerate(self.value):
            if 0 < v < self.k:
                self.primary.add(i)
                self.suppress(i, Suppression(PRIMARY))
        for i in self.forced:
            if i not in self.unknown and self.value[i] > 0:
                self.suppress(i, Suppression(EARLIER))
        if not self.unknown:
            return
        while True:
            self.singletons()
            found = self.disclosures()
            if not found:
                break
            progress = False
            for group, rels, exposed in found:
                prior = {g: self.prior(g) for g in group}
                why = _certificates(self.ix, self.value, group, rels, prior, exposed)
                added: set[int] = set()
                for x in exposed:
                    breakers = self.net(why.get(x, {}))
                    # Several cells are often pinned by one derivation: skip x when a cell added
                    # in this round already enters its combination; the next round tells.
                    if not added.isdisjoint(breakers):
                        continue
                    before = set(self.unknown)
                    outcome = self.fix(x, group, rels, breakers)
                    progress |= outcome is not None
                    added |= self.unknown - before
            if not progress:  # the first cell of a round is always fresh, so this cannot happen
                raise RuntimeError("complementary suppression made no progress")
        self.prune()

    def partner_exposed(self, r: int, c: int) -> bool:
        partner = next(d for d in self.ix.rel_cells(r) if d in self.unknown and d != c)
        return partner not in self.hopeless

    def prune(self) -> None:
        """Publish again every complementary cell that turns out not to be needed, latest first."""
        for c in reversed(self.added):
            # Cheap rejection: publishing c would leave a relation with one suppressed cell.
            if any(self.unknown_count[r] == 2 and self.partner_exposed(r, c) for r in self.ix.cell_rels[c]):
                continue
            reason = self.reasons[c]
            self.unsuppress(c)
            affected = {d for r in self.ix.cell_rels[c] for d in self.ix.rel_cells(r)}
            for group, rels in _components(self.ix, self.unknown):
                if not affected.isdisjoint(group) and self.inspect(group, rels):
                    self.suppress(c, reason)
                    break


def protect(
    grid: Grid,
    k: int = 5,
    *,
    on_unprotectable: Literal["raise", "flag"] = "raise",
    forced: Iterable[CellKey] = (),
) -> Protected:
    """Decide which cells of ``grid`` are published.

    Suppresses every cell with ``0 < n < k`` (primary), then adds complementary suppressions
    until the attacker of :func:`attack` (all three stages, told which cells are primary) pins no
    suppressed cell; finally publishes again, latest first, every complementary cell that turns
    out unnecessary. A complementary cell is chosen among the published non-zero cells that enter
    the combination of relations pinning an exposed cell: lowest level in the hierarchy of totals
    first (a part before its total, never a grand total while a part would do), then the smallest
    value per relation it joins that already has a suppression. Deterministic: ties are broken by
    the order of ``grid.cells``, never by hashing.

    With k = 2 every primary cell is known to be 1 under this attacker model, so any cell of 1 is
    unprotectable.

    Raises ValueError for invalid input (naming the relation whose total is not the sum of its
    parts) and :class:`UnprotectableError` when some cell cannot be protected by suppression at
    all, unless ``on_unprotectable="flag"``, which lists such cells in ``Protected.unprotectable``.

    ``forced`` names non-zero cells that must be suppressed whatever their value (reason
    ``"earlier_release"``): cells an earlier release of the same period suppressed. They are
    never published again by the pruning; the attacker treats a forced cell of at least k like
    a complementary one.
    """
    k = _check_k(k)
    if on_unprotectable not in ("raise", "flag"):
        raise ValueError(f"on_unprotectable must be 'raise' or 'flag', got {on_unprotectable!r}")
    if not isinstance(grid, Grid):
        raise ValueError(f"not a Grid: {grid!r}")
    for key, v in grid.cells.items():
        _check_count(key, v)
    ix = _index(grid.cells.keys(), grid.relations)
    value = [grid.cells[key] for key in ix.keys]
    for r, t in enumerate(ix.rel_total):
        parts_sum = sum(value[p] for p in ix.rel_parts[r])
        if value[t] != parts_sum:
            raise ValueError(
                f"relation {ix.rel_labels[r]}: total {ix.keys[t]!r} is {value[t]} "
                f"but its parts sum to {parts_sum}"
            )
    protector = _Protector(ix, value, k, [ix.pos[key] for key in forced])
    protector.run()
    # A hopeless complementary cell may have been published again by the pruning: nothing to hide.
    hopeless = sorted(protector.hopeless & protector.unknown)
    if hopeless and on_unprotectable == "raise":
        raise UnprotectableError(
            [ix.keys[x] for x in hopeless],
            [ix.rel_labels[r] for r in sorted(protector.hopeless_relations)],
        )
    order = sorted(protector.reasons)
    return Protected(
        k=k,
        published={key: (None if i in protector.unknown else value[i]) for i, key in enumerate(ix.keys)},
        suppressions={ix.keys[i]: protector.reasons[i] for i in order},
        relations=tuple(grid.relations),
        unprotectable=tuple(ix.keys[x] for x in hopeless),
    )
