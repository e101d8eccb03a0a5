"""Statistical disclosure control for the steering group's report (casemgmt.steering.disclosure).

Hand-built tables first, then property tests on random tables. An independent exhaustive integer
search (below) cross-checks the module's attacker on small tables, so a weak attacker cannot make
the protection look good.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Hashable, Mapping, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from casemgmt.steering.disclosure import (
    COMPLEMENTARY,
    PRIMARY,
    TOTAL,
    Bounds,
    Grid,
    Protected,
    Relation,
    UnprotectableError,
    attack,
    disclosed,
    percentile_or_none,
    protect,
    render,
)

# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


def table(name: str, rows: Sequence[str], cols: Sequence[str], values: Sequence[Sequence[int]]) -> Grid:
    grid = Grid()
    grid.add_table(
        name, [rows, cols], {(r, c): values[i][j] for i, r in enumerate(rows) for j, c in enumerate(cols)}
    )
    return grid


def breakdown(total: str, parts: dict[str, int]) -> Grid:
    grid = Grid()
    grid.add_cell(total, sum(parts.values()))
    for key, v in parts.items():
        grid.add_cell(key, v)
    grid.add_relation(total, parts, name=f"{total} by barrier")
    return grid


def exposed(grid: Grid, protected: Protected) -> set[Hashable]:
    """Suppressed cells the module's attacker pins (those flagged unprotectable excepted)."""
    found = attack(
        protected.published, protected.relations, protected.k, primary=protected.primary, witness=grid.cells
    )
    return set(disclosed(found)) - set(protected.unprotectable)


def assert_rules(grid: Grid, protected: Protected) -> None:
    k = protected.k
    for key, v in grid.cells.items():
        if 0 < v < k:
            assert protected.published[key] is None, key
            assert protected.suppressions[key].reason == PRIMARY
        elif v == 0:
            assert protected.published[key] == 0, key
        elif protected.published[key] is None:
            assert protected.suppressions[key].reason == COMPLEMENTARY
        else:
            assert protected.published[key] == v
    assert set(protected.suppressions) == {c for c, v in protected.published.items() if v is None}
    assert not exposed(grid, protected)


def uniquely_determined(
    published: Mapping[Hashable, int | None],
    relations: Sequence[Relation],
    k: int,
    primary: Sequence[Hashable],
    truth: Mapping[Hashable, int],
    cap: int,
) -> set[Hashable]:
    """Independent of the module: suppressed cells whose true value is the only integer value
    consistent with the publication, found by exhaustive search (values of non-primary
    suppressed cells capped at ``cap``, which only matters for tables with no upper bound)."""
    unknown = [c for c, v in published.items() if v is None]
    primary = set(primary)
    touching = [r for r in relations if any(published[c] is None for c in (r.total, *r.parts))]

    def narrow(lo: dict, hi: dict) -> bool:
        changed = True
        while changed:
            changed = False
            for r in touching:
                def b(c):
                    v = published[c]
                    return (v, v) if v is not None else (lo[c], hi[c])

                parts_lo = sum(b(p)[0] for p in r.parts)
                parts_hi = sum(b(p)[1] for p in r.parts)
                t_lo, t_hi = b(r.total)
                if published[r.total] is None:
                    t_lo, t_hi = max(t_lo, parts_lo), min(t_hi, parts_hi)
                    if (t_lo, t_hi) != (lo[r.total], hi[r.total]):
                        lo[r.total], hi[r.total], changed = t_lo, t_hi, True
                if t_lo > t_hi or t_lo > parts_hi or t_hi < parts_lo:
                    return False
                for p in r.parts:
                    if published[p] is None:
                        new_lo = max(lo[p], t_lo - (parts_hi - hi[p]))
                        new_hi = min(hi[p], t_hi - (parts_lo - lo[p]))
                        if new_lo > new_hi:
                            return False
                        if (new_lo, new_hi) != (lo[p], hi[p]):
                            parts_lo += new_lo - lo[p]
                            parts_hi += new_hi - hi[p]
                            lo[p], hi[p], changed = new_lo, new_hi, True
        return True

    def feasible(lo: dict, hi: dict) -> bool:
        if not narrow(lo, hi):
            return False
        free = [c for c in unknown if lo[c] < hi[c]]
        if not free:
            return True
        c = min(free, key=lambda c: (hi[c] - lo[c], repr(c)))
        for v in range(lo[c], hi[c] + 1):
            lo2, hi2 = dict(lo), dict(hi)
            lo2[c] = hi2[c] = v
            if feasible(lo2, hi2):
                return True
        return False

    start_lo = {c: (1 if c in primary else k) for c in unknown}
    start_hi = {c: (k - 1 if c in primary else cap) for c in unknown}
    out = set()
    for x in unknown:
        alternatives = ((start_lo[x], truth[x] - 1), (truth[x] + 1, start_hi[x]))
        if not any(
            low <= high and feasible({**start_lo, x: low}, {**start_hi, x: high})
            for low, high in alternatives
        ):
            out.add(x)
    return out


# ----------------------------------------------------------------------------------------------
# Hand-built tables
# ----------------------------------------------------------------------------------------------


def test_2x2_table_with_margins_suppresses_the_four_inner_cells() -> None:
    grid = table("t", ["a", "b"], ["x", "y"], [[3, 10], [12, 20]])
    protected = protect(grid, 5)
    inner = {("t", r, c) for r in "ab" for c in "xy"}
    assert {c for c, v in protected.published.items() if v is None} == inner
    assert protected.primary == (("t", "a", "x"),)
    assert set(protected.complementary) == inner - {("t", "a", "x")}
    assert protected.suppressions[("t", "a", "y")].protects == ("t", "a", "x")
    assert protected.render(("t", "a", "x")) == "."
    assert protected.render(("t", TOTAL, TOTAL)) == "45"
    bounds = protected.attack()
    assert bounds[("t", "a", "x")] == Bounds(1, 4)
    assert not any(b.exact for b in bounds.values())
    assert_rules(grid, protected)


def test_3x3_table_pairs_the_two_small_cells_through_the_cheapest_cells() -> None:
    grid = table("t", ["a", "b", "c"], ["x", "y", "z"], [[2, 9, 15], [11, 3, 14], [20, 18, 25]])
    protected = protect(grid, 5)
    assert {c for c, v in protected.published.items() if v is None} == {
        ("t", "a", "x"), ("t", "a", "y"), ("t", "b", "x"), ("t", "b", "y"),
    }
    assert all(protected.published[("t", r, TOTAL)] is not None for r in ["a", "b", "c", TOTAL])
    assert_rules(grid, protected)


def test_a_large_inner_cell_is_preferred_to_the_row_total() -> None:
    grid = table("t", ["a"], ["x", "y", "z"], [[3, 50, 60]])
    protected = protect(grid, 5)
    assert protected.published[("t", "a", "y")] is None
    assert protected.published[("t", "a", TOTAL)] == 113
    assert_rules(grid, protected)


TOWNS = ["wittmar", "ahlbeck", "brunsdorf", "eichenau", "feldmark", "grauweiler", "heidlingen", "kornrode",
         "lindenhaag"]


def test_kreis_total_over_nine_towns_with_a_town_by_category_table() -> None:
    cats = ["language", "housing", "work"]
    rows = [[3, 20, 2], [6, 12, 1], [0, 12, 4], [20, 3, 3], [12, 20, 20], [12, 8, 2], [3, 2, 20], [8, 0, 1], [2, 0, 4]]
    grid = table("town_category", TOWNS, cats, rows)
    grid.add_cell("kreis", 200)
    grid.add_relation("kreis", [("town_category", t, TOTAL) for t in TOWNS], name="Kreis = sum of towns")
    grid.add_relation("kreis", [("town_category", TOTAL, TOTAL)], name="Kreis = total of the table")
    protected = protect(grid, 5)
    assert protected.published["kreis"] == 200
    assert protected.published[("town_category", TOTAL, TOTAL)] == 200
    assert_rules(grid, protected)


def test_quarterly_trend_and_three_dimensional_table_with_margins() -> None:
    grid = Grid()
    barriers, fields, kinds = ["language", "waiting", "housing"], ["education", "work"], ["jobcenter", "school", "ngo"]
    counts = {
        ("language", "education", "school"): 7, ("language", "work", "jobcenter"): 2,
        ("waiting", "education", "ngo"): 1, ("waiting", "work", "jobcenter"): 9,
        ("housing", "work", "ngo"): 4, ("housing", "education", "school"): 6,
        ("language", "work", "ngo"): 5, ("housing", "work", "jobcenter"): 3,
    }
    grid.add_table("cube", [barriers, fields, kinds], counts)
    quarters = {"2024-Q1": 10, "2024-Q2": 3, "2024-Q3": 12, "2024-Q4": 12}
    grid.add_table("trend", [list(quarters)], {(q,): n for q, n in quarters.items()})
    grid.add_relation(("cube", TOTAL, TOTAL, TOTAL), [("trend", TOTAL)], name="same persons in the year")
    protected = protect(grid, 5, on_unprotectable="flag")
    assert_rules(grid, protected)
    assert protected.published[("trend", "2024-Q2")] is None


def test_a_bridge_between_two_suppression_cycles_is_found_and_protected() -> None:
    # Two 2x2 blocks of suppressed cells, each a cycle the attacker cannot solve, joined by one
    # suppressed cell: the bridge is determined (row and column sums of one block differ by it).
    values = [[2, 3, 10, 12, 11], [3, 2, 2, 14, 9], [15, 16, 3, 2, 13], [10, 11, 2, 3, 17], [9, 8, 12, 10, 30]]
    rows, cols = ["r0", "r1", "r2", "r3", "r4"], ["c0", "c1", "c2", "c3", "c4"]
    grid = table("t", rows, cols, values)
    small = [("t", rows[i], cols[j]) for i in range(5) for j in range(5) if values[i][j] < 5]
    bridge = ("t", "r1", "c2")
    assert len(small) == 9
    view = {key: (None if key in small else v) for key, v in grid.cells.items()}
    bounds = attack(view, grid.relations, 5, primary=small, witness=grid.cells)
    assert disclosed(bounds) == [bridge]
    assert bounds[bridge] == Bounds(2, 2)
    # Linear algebra alone finds it, and the attacker needs no witness to do so.
    assert disclosed(attack(view, grid.relations, 5, primary=small, linear_programming=False)) == [bridge]
    assert attack(view, grid.relations, 5, primary=small) == bounds

    protected = protect(grid, 5)
    assert protected.complementary
    assert not protected.attack()[bridge].exact
    assert_rules(grid, protected)
    assert not uniquely_determined(protected.published, protected.relations, 5, protected.primary, grid.cells, 200)


def test_single_part_relation_suppresses_both_cells_together() -> None:
    grid = Grid()
    grid.add_cell("all_towns", 3)
    grid.add_cell("wittmar", 3)
    grid.add_relation("all_towns", ["wittmar"], name="only one town reported")
    protected = protect(grid, 5)
    assert protected.published == {"all_towns": None, "wittmar": None}
    assert_rules(grid, protected)

    # The same figure published in a second table must be suppressed along with the first.
    grid = table("t", ["a", "b"], ["x", "y"], [[3, 10], [12, 20]])
    grid.add_cell("same_as_a_y", 10)
    grid.add_relation("same_as_a_y", [("t", "a", "y")], name="a/y repeated elsewhere")
    protected = protect(grid, 5)
    assert protected.published[("t", "a", "y")] is None
    assert protected.published["same_as_a_y"] is None
    assert protected.suppressions["same_as_a_y"].reason == COMPLEMENTARY
    assert_rules(grid, protected)


def test_row_with_only_zeros_beside_a_small_cell_and_a_small_total() -> None:
    grid = table("t", ["a", "b"], ["x", "y", "z"], [[3, 0, 0], [10, 6, 7]])
    protected = protect(grid, 5)
    assert protected.published[("t", "a", "x")] is None
    assert protected.published[("t", "a", TOTAL)] is None
    assert protected.suppressions[("t", "a", TOTAL)].reason == PRIMARY
    assert protected.published[("t", "a", "y")] == 0
    assert protected.published[("t", "a", "z")] == 0
    assert_rules(grid, protected)


def test_cells_in_no_relation_get_primary_suppression_only() -> None:
    grid = Grid()
    grid.add_cell("handovers_jobcenter_school", 2)
    grid.add_cell("handovers_school_ngo", 7)
    grid.add_cell("handovers_ngo_school", 0)
    protected = protect(grid, 5)
    assert protected.published == {
        "handovers_jobcenter_school": None, "handovers_school_ngo": 7, "handovers_ngo_school": 0,
    }
    assert not protected.complementary
    assert_rules(grid, protected)


def test_k_of_one_suppresses_nothing() -> None:
    grid = table("t", ["a", "b"], ["x", "y"], [[1, 0], [2, 20]])
    protected = protect(grid, 1)
    assert protected.published == grid.cells
    assert not protected.suppressions


def test_k_of_two_cannot_hide_a_one_from_an_attacker_who_knows_the_primary_cells() -> None:
    grid = table("t", ["a", "b"], ["x", "y"], [[1, 6], [7, 20]])
    with pytest.raises(UnprotectableError):
        protect(grid, 2)
    grid = table("t", ["a", "b"], ["x", "y"], [[2, 6], [7, 20]])
    assert protect(grid, 2).published == grid.cells


def test_empty_grid() -> None:
    protected = protect(Grid())
    assert protected.published == {} and protected.suppressions == {}


def test_no_small_cell_means_nothing_is_suppressed() -> None:
    grid = table("t", ["a", "b"], ["x", "y"], [[5, 0], [9, 20]])
    assert protect(grid, 5).published == grid.cells


def test_inconsistent_input_is_rejected_naming_the_relation() -> None:
    grid = Grid()
    for key, v in {"kreis": 9, "wittmar": 2, "ahlbeck": 5}.items():
        grid.add_cell(key, v)
    grid.add_relation("kreis", ["wittmar", "ahlbeck"], name="Kreis = sum of towns")
    with pytest.raises(ValueError, match="Kreis = sum of towns.*9.*7"):
        protect(grid)


@pytest.mark.parametrize(
    ("total", "parts", "message"),
    [
        ("kreis", ["wittmar", "nowhere"], "unknown cell 'nowhere'"),
        ("kreis", ["wittmar", "wittmar"], "listed twice"),
        ("kreis", ["kreis", "wittmar"], "also one of its parts"),
        ("kreis", [], "no parts"),
    ],
)
def test_malformed_relations_are_rejected(total: str, parts: list[str], message: str) -> None:
    grid = Grid()
    grid.add_cell("kreis", 4)
    grid.add_cell("wittmar", 4)
    grid.add_relation(total, parts, name="broken")
    with pytest.raises(ValueError, match=message):
        protect(grid)


def test_bad_values_and_parameters_are_rejected() -> None:
    grid = Grid()
    with pytest.raises(ValueError, match="negative"):
        grid.add_cell("a", -1)
    with pytest.raises(ValueError, match="int"):
        grid.add_cell("a", 2.0)  # type: ignore[arg-type]
    grid.add_cell("a", 2)
    with pytest.raises(ValueError, match="twice"):
        grid.add_cell("a", 3)
    for k in (0, -5, True, 2.5):
        with pytest.raises(ValueError, match="k must"):
            protect(grid, k)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="total label"):
        Grid().add_table("t", [["x", TOTAL]], {})
    with pytest.raises(ValueError, match="not a cell"):
        Grid().add_table("t", [["x", "y"]], {("z",): 1})


def test_unprotectable_breakdown_raises_or_is_flagged() -> None:
    # Four persons in four categories, k = 5: the attacker knows the town total (primary) is at
    # most 4 and each of the four non-zero cells at least 1, so each is 1, whatever is hidden.
    grid = breakdown("wittmar", {"language": 1, "housing": 1, "work": 1, "health": 1, "mobility": 0})
    with pytest.raises(UnprotectableError, match="coarsen or drop") as info:
        protect(grid, 5)
    assert set(info.value.cells) == {"wittmar", "language", "housing", "work", "health"}
    assert info.value.relations == ("wittmar by barrier",)
    assert isinstance(info.value, ValueError)
    flagged = protect(grid, 5, on_unprotectable="flag")
    assert set(flagged.unprotectable) == set(info.value.cells)
    assert flagged.published["mobility"] == 0
    # Five categories with one person each can be protected, by hiding the total of 5 as well
    # (five cells of at least 1 summing to 5 are all 1); the attacker then only knows 5..20.
    grid = breakdown("wittmar", {"language": 1, "housing": 1, "work": 1, "health": 1, "mobility": 1})
    protected = protect(grid, 5)
    assert protected.suppressions["wittmar"].reason == COMPLEMENTARY
    assert protected.attack()["wittmar"] == Bounds(5, 20)
    assert_rules(grid, protected)


# ----------------------------------------------------------------------------------------------
# The attacker
# ----------------------------------------------------------------------------------------------


def test_attacker_recovers_a_cell_when_only_primary_suppression_is_applied() -> None:
    grid = table("t", ["a", "b"], ["x", "y"], [[3, 10], [12, 20]])
    view = dict(grid.cells)
    view[("t", "a", "x")] = None
    assert attack(view, grid.relations, 5) == {("t", "a", "x"): Bounds(3, 3)}


def test_attacker_uses_the_primary_range_to_pin_cells_by_bounds() -> None:
    # 8 = a + b with a, b primary (1..4): both must be 4, though the equations alone cannot say.
    grid = breakdown("wittmar", {"language": 4, "housing": 4, "work": 0})
    view = {**grid.cells, "language": None, "housing": None}
    primary = ["language", "housing"]
    assert set(disclosed(attack(view, grid.relations, 5, primary=primary, linear_programming=False))) == set(primary)
    assert not disclosed(attack(view, grid.relations, 5))  # without knowing which cells are primary
    protected = protect(grid, 5)
    assert protected.published["wittmar"] is None  # nothing else is left to suppress
    assert_rules(grid, protected)


def test_attacker_combines_relations_with_bounds_beyond_interval_propagation() -> None:
    # Published as below (k = 3, "." suppressed). Rows r3 and c0/c2 and the grand total give
    # r2/c2 - r3/c1 = 1; with both primary (1..2) that pins r2/c2 = 2 and r3/c1 = 1. Interval
    # propagation relation by relation does not see it; the linear-programming stage does.
    #          c0   c1   c2   total
    #   r0      0    .    0    .
    #   r1      0    9    5   14
    #   r2      0    .    .    .
    #   r3      .    .    .    6
    #   total   .   19    .   31
    grid = table("t", ["r0", "r1", "r2", "r3"], ["c0", "c1", "c2"], [[0, 4, 0], [0, 9, 5], [0, 5, 2], [2, 1, 3]])
    hidden = [("t", "r0", "c1"), ("t", "r0", TOTAL), ("t", "r2", "c1"), ("t", "r2", "c2"), ("t", "r2", TOTAL),
              ("t", "r3", "c0"), ("t", "r3", "c1"), ("t", "r3", "c2"), ("t", TOTAL, "c0"), ("t", TOTAL, "c2")]
    primary = [key for key in hidden if grid.cells[key] < 3]
    view = {key: (None if key in hidden else v) for key, v in grid.cells.items()}
    weak = attack(view, grid.relations, 3, primary=primary, witness=grid.cells, linear_programming=False)
    assert not disclosed(weak)
    strong = attack(view, grid.relations, 3, primary=primary, witness=grid.cells)
    assert set(disclosed(strong)) == {("t", "r2", "c2"), ("t", "r3", "c1")}
    assert strong[("t", "r2", "c2")] == Bounds(2, 2) and strong[("t", "r3", "c1")] == Bounds(1, 1)
    assert attack(view, grid.relations, 3, primary=primary) == strong  # found without a witness too
    assert uniquely_determined(view, grid.relations, 3, primary, grid.cells, 100) == set(disclosed(strong))
    assert_rules(grid, protect(grid, 3))


def test_attacker_rejects_contradictions() -> None:
    grid = table("t", ["a"], ["x", "y"], [[3, 10]])
    view = dict(grid.cells)
    view[("t", "a", "y")] = 11
    with pytest.raises(ValueError, match="contradict"):
        attack(view, grid.relations, 5)
    view = dict(grid.cells)
    view[("t", "a", "x")] = None
    with pytest.raises(ValueError, match="witness"):
        attack(view, grid.relations, 5, witness={**grid.cells, ("t", "a", "x"): 4})


def test_published_result_holds_no_suppressed_value() -> None:
    grid = table("t", ["a", "b"], ["x", "y"], [[3, 10], [12, 20]])
    protected = protect(grid, 5)
    assert [v for v in protected.published.values() if v in (3, 10, 12, 20)] == []
    assert "3" not in repr(protected.suppressions)


def test_same_result_whatever_the_hash_seed() -> None:
    script = textwrap.dedent(
        """
        import random
        from casemgmt.steering.disclosure import Grid, protect
        rng = random.Random(7)
        rows = [f"town-{i}" for i in range(6)]
        cols = [f"barrier-{j}" for j in range(6)]
        grid = Grid()
        grid.add_table("t", [rows, cols], {(r, c): rng.choice([0, 1, 2, 3, 6, 9, 14]) for r in rows for c in cols})
        p = protect(grid, 5, on_unprotectable="flag")
        print(sorted(map(repr, p.published.items())), sorted(map(repr, p.suppressions.items())))
        """
    )
    outputs = set()
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
        outputs.add(run.stdout)
    assert len(outputs) == 1


# ----------------------------------------------------------------------------------------------
# render and percentiles
# ----------------------------------------------------------------------------------------------


def test_render() -> None:
    assert render(None) == "."
    assert render(0) == "0"
    assert render(1234) == "1234"
    assert render(12.5) == "12.5"
    with pytest.raises(TypeError):
        render("7")  # type: ignore[arg-type]


def test_percentile_uses_linear_interpolation_and_needs_k_persons() -> None:
    assert percentile_or_none([1, 2, 3, 4], 25, 4) == 1.75
    assert percentile_or_none([4, 3, 2, 1], 50, 4) == 2.5
    assert percentile_or_none([10, 1, 7, 3, 5], 50, 5) == 5.0
    assert percentile_or_none([10, 1, 7, 3, 5], 90, 5) == pytest.approx(8.8)
    assert percentile_or_none([10, 1, 7, 3, 5], 0, 5) == 1.0
    assert percentile_or_none([10, 1, 7, 3, 5], 100, 5) == 10.0
    assert percentile_or_none([1, 2, 3, 4], 50, 5) is None
    assert percentile_or_none([], 50, 1) is None
    # Six waiting times of three persons: the threshold counts persons.
    assert percentile_or_none([3, 4, 5, 6, 7, 8], 50, 5, persons=3) is None
    assert percentile_or_none([3, 4, 5, 6, 7, 8], 50, 3, persons=3) == 5.5
    for q in (-1, 101):
        with pytest.raises(ValueError, match="q must"):
            percentile_or_none([1, 2, 3], q, 1)
    with pytest.raises(ValueError, match="not a number"):
        percentile_or_none([1, float("nan"), 3], 50, 1)
    with pytest.raises(ValueError, match="k must"):
        percentile_or_none([1, 2, 3], 50, 0)


# ----------------------------------------------------------------------------------------------
# Property tests on random tables
# ----------------------------------------------------------------------------------------------


@st.composite
def reports(draw: st.DrawFn) -> tuple[Grid, int, tuple]:
    """A rows x cols table of persons with margins and, optionally, a second breakdown of the
    same persons (quarter x cols) sharing the column totals and the grand total."""
    k = draw(st.sampled_from([3, 4, 5]))
    n_rows, n_cols, n_quarters = draw(st.integers(1, 6)), draw(st.integers(1, 6)), draw(st.integers(0, 4))
    spread = st.tuples(st.integers(0, n_rows - 1), st.integers(0, n_cols - 1), st.integers(0, max(n_quarters, 1) - 1))
    persons = draw(st.lists(spread, max_size=40))
    # Some crowded cells next to the many small ones.
    crowd = draw(st.lists(st.tuples(spread, st.integers(5, 15)), max_size=3))
    for person, size in crowd:
        persons.extend([person] * size)
    rows, cols = [f"r{i}" for i in range(n_rows)], [f"c{j}" for j in range(n_cols)]
    quarters = [f"q{i}" for i in range(n_quarters)]
    grid = Grid()
    a: dict[tuple, int] = {}
    b: dict[tuple, int] = {}
    for r, c, q in persons:
        a[(rows[r], cols[c])] = a.get((rows[r], cols[c]), 0) + 1
        if quarters:
            b[(quarters[q], cols[c])] = b.get((quarters[q], cols[c]), 0) + 1
    grid.add_table("A", [rows, cols], a)
    if quarters:
        grid.add_table("B", [quarters, cols], b)
        for c in cols:
            grid.add_relation(("A", TOTAL, c), [("B", TOTAL, c)], name=f"column {c} in both tables")
        grid.add_relation(("A", TOTAL, TOTAL), [("B", TOTAL, TOTAL)], name="grand total in both tables")
    return grid, k, ("A", TOTAL, TOTAL)


PROPERTY_SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(reports())
def test_random_tables_are_protected(report: tuple[Grid, int, tuple]) -> None:
    grid, k, grand = report
    protected = protect(grid, k, on_unprotectable="flag")
    assert_rules(grid, protected)

    # Deterministic, and the default mode raises exactly when something is unprotectable.
    again = protect(grid, k, on_unprotectable="flag")
    assert (again.published, again.suppressions) == (protected.published, protected.suppressions)
    if protected.unprotectable:
        with pytest.raises(UnprotectableError) as info:
            protect(grid, k)
        assert set(info.value.cells) == set(protected.unprotectable)
        # Legitimately so: the attacker pins them even when every non-zero cell is hidden.
        everything = {key: (None if v else 0) for key, v in grid.cells.items()}
        small = [key for key, v in grid.cells.items() if 0 < v < k]
        at_max = attack(everything, grid.relations, k, primary=small, witness=grid.cells)
        assert set(protected.unprotectable) <= set(disclosed(at_max))
    else:
        assert protect(grid, k).published == protected.published

    # No complementary suppression is wasted: publishing any one of them exposes a cell.
    for key in protected.complementary:
        view = {**protected.published, key: grid.cells[key]}
        found = attack(view, grid.relations, k, primary=protected.primary, witness=grid.cells)
        assert set(disclosed(found)) - set(protected.unprotectable), key

    # The independent exhaustive search agrees with the attacker on small patterns.
    if sum(v is None for v in protected.published.values()) <= 10:
        pinned = uniquely_determined(
            protected.published, protected.relations, k, protected.primary, grid.cells, 2 * grid.cells[grand] + k
        )
        assert pinned <= set(protected.unprotectable)


@settings(max_examples=60, deadline=None)
@given(reports())
def test_random_tables_attacker_finds_what_primary_suppression_alone_leaves_open(
    report: tuple[Grid, int, tuple],
) -> None:
    grid, k, grand = report
    small = [key for key, v in grid.cells.items() if 0 < v < k]
    view = {key: (None if key in small else v) for key, v in grid.cells.items()}
    found = set(disclosed(attack(view, grid.relations, k, primary=small, witness=grid.cells)))
    if len(small) <= 10:
        assert found == uniquely_determined(view, grid.relations, k, small, grid.cells, 2 * grid.cells[grand] + k)
    # A small cell alone in a line of a table is always given away by its margins.
    for key in small:
        lines = [(r.total, *r.parts) for r in grid.relations if key in (r.total, *r.parts)]
        if any(sum(view[c] is None for c in line) == 1 for line in lines):
            assert key in found


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(0, 1)), max_size=30),
    st.sampled_from([3, 5]),
)
def test_random_three_dimensional_tables_are_protected(persons: list[tuple[int, int, int]], k: int) -> None:
    dims = [["language", "waiting", "housing"], ["education", "work", "health"], ["jobcenter", "ngo"]]
    counts: dict[tuple, int] = {}
    for i, j, m in persons:
        key = (dims[0][i], dims[1][j], dims[2][m])
        counts[key] = counts.get(key, 0) + 1
    grid = Grid()
    grid.add_table("cube", dims, counts)
    protected = protect(grid, k, on_unprotectable="flag")
    assert_rules(grid, protected)
