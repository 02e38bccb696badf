"""The run order of a study's cells: every optimizer coarse to fine, so that any prefix of the
queue maps every optimizer over its whole grid."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from study.spec.model import Cell

ORDER_CHUNK = 64  # cells of one (optimizer, seed) per round of the run order: runner.AUTO_POPULATION (a test checks)


SCOUT_CELLS = 16  # at most this many cells per optimizer in the run order's first round


def _bisection(n: int) -> dict[int, tuple[int, int]]:
    """Indices 0 … n-1 of one sorted axis coarse to fine: both ends (level 0), then the middle of each
    interval between points already taken, breadth first (level 1, 2, …). {index: (position, level)}."""
    order = [(0, 0)] + ([(n - 1, 0)] if n > 1 else [])
    intervals = deque([(0, n - 1, 1)])
    while intervals:
        low, high, level = intervals.popleft()
        if high - low < 2:
            continue
        middle = (low + high) // 2
        order.append((middle, level))
        intervals.extend([(low, middle, level + 1), (middle, high, level + 1)])
    return {index: (position, level) for position, (index, level) in enumerate(order)}


def _coarse_to_fine(points: list[dict[str, float]]) -> tuple[list[int], int]:
    """The positions of one (optimizer, seed)'s grid ``points`` in coarse-to-fine order, and how many of
    them form its scout (the level-≤1 sub-grid: each swept axis' ends and middle, at most SCOUT_CELLS).

    A point's level is the finest level (see :func:`_bisection`) of its coordinates, so every prefix
    that ends a level is a sub-grid: the corners, then ends and middles (3 × 3 on two axes), then
    5 × 5 …; within a level, points whose coordinates came earlier on their axes go first."""
    values = {name: sorted({p[name] for p in points if name in p}) for name in {n for p in points for n in p}}
    swept = sorted(name for name, seen in values.items() if len(seen) > 1)
    rank = {}
    for name in swept:
        walk = _bisection(len(values[name]))
        rank[name] = {value: walk[i] for i, value in enumerate(values[name])}

    def key(k: int) -> tuple:
        coordinates = [rank[name][points[k][name]] for name in swept]
        return (max((level for _, level in coordinates), default=0), sum(position for position, _ in coordinates),
                tuple(position for position, _ in coordinates), k)

    keys = sorted((key(k) for k in range(len(points))))
    scout = min(SCOUT_CELLS, sum(1 for k in keys if k[0] <= 1))
    return [k[-1] for k in keys], scout


def run_order(cells: Sequence[Cell]) -> list[int]:
    """The study's run order: ``result[k]`` is the position of ``cells[k]`` (cells as :func:`expand` lists
    them) in the order the driver leases cells. Stored per cell (``sweep_cells.run_order``) so that
    every driver and every resume agree; a pure function of the cells, so a database migrated from
    before it gets the same order from its stored rows.

    Goal: any finished prefix is a coarse map of every optimizer, while a batch of consecutive cells
    (a worker's pass: up to 64, runner.AUTO_POPULATION) still forms few, large (optimizer, seed)
    groups, each trained as one population. Each (optimizer, seed) walks its grid coarse to fine
    (:func:`_coarse_to_fine`) and is cut into chunks that the order deals out in rounds:

    * round 0, the scouts: for the first seed only, each optimizer's level-≤1 sub-grid (ends and
      middle of each swept axis: 3 points on one axis, 3 × 3 on two, at most SCOUT_CELLS), optimizers
      in file order. A few percent of a study, and every optimizer has a readable coarse map;
    * round r ≥ 1: for each seed (file order), for each optimizer, the grid points ``[(r-1)·64, r·64)``
      of its order (the first seed's round 1 starts after its scout), i.e. population-sized chunks:
      every later seed and every next 64 points of every optimizer, coarse to fine.

    Why populations keep their size: a chunk is a run of consecutive cells of one (optimizer, seed),
    as large as a worker's batch (a grid of ≤ 64 points per seed is one chunk, whole, as in file
    order), so a batch spans one or two groups, as in file order, except for the scouts: each
    optimizer's scout is one extra, small population (≤ SCOUT_CELLS configurations) when it is sent
    in another batch than the rest of its first seed's grid. That is the price of covering every
    optimizer before any one is complete; a cell costs the same wherever it is trained. Seeds come
    after the first seed's coarse maps on purpose: a map of one seed per point is readable, a
    second seed of a few points is not.
    """
    optimizers_ = list(dict.fromkeys(cell.optimizer for cell in cells))
    seeds = list(dict.fromkeys(cell.seed for cell in cells))
    groups: dict[tuple[str, int], list[int]] = {}
    for k, cell in enumerate(cells):
        groups.setdefault((cell.optimizer, cell.seed), []).append(k)
    chunks = []  # (round, seed position, optimizer position, cells in order)
    for (optimizer, seed), members in groups.items():
        walk, scout = _coarse_to_fine([cells[k].hparams for k in members])
        ordered = [members[i] for i in walk]
        first_seed = seeds.index(seed) == 0
        bounds = [0, scout] if first_seed and scout < len(ordered) else [0]
        bounds += [b for b in range(ORDER_CHUNK, len(ordered), ORDER_CHUNK) if b > bounds[-1]] + [len(ordered)]
        for start, end in zip(bounds, bounds[1:]):
            round_ = 0 if first_seed and start == 0 else start // ORDER_CHUNK + 1
            chunks.append((round_, seeds.index(seed), optimizers_.index(optimizer), ordered[start:end]))
    positions = [0] * len(cells)
    for position, k in enumerate(k for *_, chunk in sorted(chunks, key=lambda c: c[:3]) for k in chunk):
        positions[k] = position
    return positions
