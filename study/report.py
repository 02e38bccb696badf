"""``adamscape report``: a study's robustness atlas as PNG files and one self-contained HTML page.

The numbers come from :mod:`study.analysis` (the dashboard's); this module only draws them, with
matplotlib (no browser, no network): the page embeds its images, so it opens offline.
"""

from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from . import analysis, store

LEADERBOARD_COLUMNS = {
    "optimizer": "the optimizer, as the study file names it",
    "best": "the best configuration's score (seed mean; diverged seeds at the study's worst)",
    "relative_best": "best as a fraction of the study's best (1: the winner)",
    "good_fraction": "configurations within δ of the study's best score, no seed diverged",
    "lr_window_decades": "consecutive good learning rates around the best one, in decades",
    "divergence_rate": "diverged runs / finished runs",
    "mean_seed_std": "mean std over seeds of a configuration",
    "expected_best_1": "expected best score of 1 random configuration",
    "expected_best_10": "expected best score of 10 random configurations (Show-Your-Work)",
    "configs": "configurations in the grid",
}


def write(engine: Engine, name: str, out: Path, delta: float = 0.05) -> list[Path]:
    """Write ``maps.png``, ``sensitivity.png``, ``expected_best.png``, ``leaderboard.csv`` and
    ``report.html`` under ``out``; return their paths."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    study = store.get_study(engine, name)
    metric, direction = study["metric"], study["direction"]
    results = store.results(name, engine)
    scores = analysis.cell_scores(results, metric, direction)
    if scores.empty:
        from .errors import UserError

        raise UserError(f"study {name!r} has no finished cell yet; run it first (`adamscape run {name}`)")
    order = [o for o in study["spec"]["optimizers"] if o in set(scores["optimizer"])]
    progress = analysis.finished_line(store.status_counts(engine, study["id"]), study["total_cells"])
    out.mkdir(parents=True, exist_ok=True)
    charts = {"maps": _png(maps_figure(scores, list(study["spec"]["optimizers"]), metric, direction, results)),
              "sensitivity": _sensitivity(scores, order, metric, direction),
              "expected_best": _expected_best(scores, order, metric, direction)}
    written = []
    for chart, png in charts.items():
        (out / f"{chart}.png").write_bytes(png)
        written.append(out / f"{chart}.png")
    board = pd.DataFrame([asdict(r) for r in analysis.robustness(scores, direction, delta)])
    board = board.set_index("optimizer").loc[order].reset_index()[list(LEADERBOARD_COLUMNS)]
    board.to_csv(out / "leaderboard.csv", index=False)
    page = _page(study, board, charts, delta, progress)
    (out / "report.html").write_text(page, encoding="utf-8")
    return [*written, out / "leaderboard.csv", out / "report.html"]


def _png(figure) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def maps_figure(scores: pd.DataFrame, order: list[str], metric: str, direction: str, results: pd.DataFrame):
    """One heatmap per optimizer of ``order`` over its whole grid (``results``: every cell of the study),
    on the study's one colour range; ✕ where a seed diverged; hatched where no cell has finished yet
    (grey: finished, but no score: failed)."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import Normalize
    from matplotlib.patches import Rectangle

    maps = [analysis.heatmap(scores, optimizer, direction, cells=results) for optimizer in order]  # lr across
    low, high = analysis.colour_range(maps)
    norm = Normalize(low, high)
    columns = min(3, len(maps))
    rows = math.ceil(len(maps) / columns)
    figure, grid = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False)
    colours = "viridis" if direction == "maximize" else "viridis_r"
    image = None
    for ax, hm in zip(grid.flat, maps):
        ax.set_facecolor("#d9d9d9")  # grey: finished, but without a score (failed)
        image = ax.imshow(hm.score, cmap=colours, norm=norm, aspect="auto", origin="lower")
        ax.set_xticks(range(len(hm.x_values)), [analysis.axis_label(v) for v in hm.x_values], rotation=45, fontsize=7)
        if hm.y:
            ax.set_yticks(range(len(hm.y_values)), [analysis.axis_label(v) for v in hm.y_values], fontsize=7)
        else:
            ax.set_yticks([])  # one swept axis: a strip
        ax.set_xlabel(hm.x)
        ax.set_ylabel(hm.y or "")
        ax.set_title(hm.optimizer, fontsize=10)
        for (i, j), diverged in pd.DataFrame(hm.diverged).stack().items():
            if diverged > 0:
                ax.text(j, i, "✕", ha="center", va="center", color="white", fontsize=9)
        for i, j in zip(*np.nonzero(hm.missing)):
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="white", edgecolor="#9a9a9a", hatch="///",
                                   linewidth=0, label="not run yet"))
        if hm.finished.sum() < hm.planned.sum():
            ax.set_title(f"{hm.optimizer}: {hm.finished.sum()} of {hm.planned.sum()} cells finished", fontsize=10)
    for ax in list(grid.flat)[len(maps):]:
        ax.axis("off")
    figure.colorbar(image, ax=grid.ravel().tolist(), label=f"{metric} (score)")
    return figure


def _sensitivity(scores: pd.DataFrame, order: list[str], metric: str, direction: str) -> bytes:
    """The metric against lr per optimizer, other axes at their best, with a ±1 seed-std band."""
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(6.5, 4))
    for optimizer in order:
        if "lr" not in analysis.swept_axes(scores, optimizer):
            continue
        curve = analysis.sensitivity(scores, optimizer, direction)
        line, = ax.plot(curve.values, curve.score, marker="o", label=optimizer)
        low = [m - s for m, s in zip(curve.mean, curve.std)]
        high = [m + s for m, s in zip(curve.mean, curve.std)]
        ax.fill_between(curve.values, low, high, color=line.get_color(), alpha=0.15)
        for x, y, d in zip(curve.values, curve.score, curve.diverged):
            if d:
                ax.plot(x, y, marker="x", color="black")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel(f"{metric} (score; band: seed mean ± std)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _png(figure)


def _expected_best(scores: pd.DataFrame, order: list[str], metric: str, direction: str) -> bytes:
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(6.5, 4))
    for optimizer in order:
        curve = analysis.expected_best_curve(scores, optimizer, direction)
        ax.plot(range(1, len(curve) + 1), curve, label=optimizer)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("configurations tried at random (k)")
    ax.set_ylabel(f"expected best {metric}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _png(figure)


def _page(study: dict, board: pd.DataFrame, charts: dict[str, bytes], delta: float, progress: str) -> str:
    """One HTML file with everything inline (images as data: URIs): it opens offline."""
    def image(chart: str, caption: str) -> str:
        data = base64.b64encode(charts[chart]).decode()
        return f'<figure><img alt="{chart}" src="data:image/png;base64,{data}"><figcaption>{caption}</figcaption></figure>'

    head = "".join(f'<th title="{html.escape(LEADERBOARD_COLUMNS[c])}">{html.escape(c)}</th>' for c in board.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>"
                   for row in board.itertuples(index=False))
    legend = "".join(f"<li><b>{html.escape(c)}</b>: {html.escape(t)}</li>" for c, t in LEADERBOARD_COLUMNS.items())
    name, metric = html.escape(study["name"]), html.escape(study["metric"])
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>adamscape · {name}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
img{{max-width:100%}}figcaption{{color:#555;font-size:90%}}</style></head><body>
<h1>adamscape · {name}</h1>
<p>task <b>{html.escape(study["task"])}</b> · metric <b>{metric}</b> ({html.escape(study["direction"])}) ·
{study["total_cells"]} cells · good region: within δ = {delta:g} (relative) of the study's best score</p>
<p class="progress"><b>{html.escape(progress)}</b></p>
<h2>Leaderboard</h2><table><tr>{head}</tr>{body}</table><ul>{legend}</ul>
<h2>Robustness maps</h2>{image("maps", "one colour range for every optimizer; ✕: a seed diverged; hatched: not run yet; grey: finished "
                       "without a score (failed)")}
<h2>Sensitivity to the learning rate</h2>{image("sensitivity", "other hyperparameters at their best for each learning rate")}
<h2>Expected best of k</h2>{image("expected_best", "expected best score among k configurations drawn at random")}
</body></html>
"""


def _cell(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
