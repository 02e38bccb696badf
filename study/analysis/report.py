"""``adamscape report``: a study's robustness atlas as PNG files and one self-contained HTML page.

The numbers come from :mod:`study.analysis` (the dashboard's); this module only draws them, with
matplotlib (no browser, no network): the page embeds its images, so it opens offline.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from study import analysis, store


def write(engine: Engine, name: str, out: Path, delta: float = 0.05) -> list[Path]:
    """Write ``maps.png``, ``sensitivity.png``, ``expected_best.png``, ``leaderboard.csv`` (with the LR
    sensitivity and the seed-bootstrap intervals), ``comparison.csv`` (P(one optimizer less sensitive than
    another)), ``tunability.csv`` (Sivaprasad et al.), ``lr_sensitivity.csv`` (per value of the other axes)
    and ``report.html`` under ``out``; return their paths."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    study = store.get_study(engine, name)
    metric, direction = study["metric"], study["direction"]
    results = store.results(name, engine)
    scores = analysis.cell_scores(results, metric, direction)
    if scores.empty:
        from study.errors import UserError

        raise UserError(f"study {name!r} has no finished cell yet; run it first (`adamscape run {name}`)")
    order = [o for o in study["spec"]["optimizers"] if o in set(scores["optimizer"])]
    progress = analysis.finished_line(store.status_counts(engine, study["id"]), study["total_cells"])
    out.mkdir(parents=True, exist_ok=True)
    charts = {"maps": _png(maps_figure(scores, list(study["spec"]["optimizers"]), metric, direction, results)),
              "sensitivity": _sensitivity(scores, order, metric, direction),
              "expected_best": _expected_best(scores, order, metric, direction)}
    coupled = _coupled_axes(scores, results, order, study["spec"])
    if coupled:  # maps over τ = 1/(η·λ) or β2's half-life, for the optimizers that sweep what they derive from
        coupled_scores, coupled_results, pairs = coupled
        charts["coupled"] = _png(maps_figure(coupled_scores, order, metric, direction, coupled_results, axes=pairs))
    written = []
    for chart, png in charts.items():
        (out / f"{chart}.png").write_bytes(png)
        written.append(out / f"{chart}.png")
    board, boot = analysis.leaderboard(results, metric, direction, delta, order=order)
    board = board[list(analysis.GLOSSARY)]
    tables = {"leaderboard": board, "comparison": analysis.comparison(boot, order)}
    tunable = analysis.tunability_frame(analysis.tunability(scores, direction))
    tables["tunability"] = tunable.set_index("optimizer").loc[[o for o in order if o in set(tunable["optimizer"])]
                                                             ].reset_index()
    slices = analysis.lr_sensitivity(results, metric, direction)
    tables["lr_sensitivity"] = slices[slices["optimizer"].isin(order)]
    for table, frame in tables.items():
        frame.to_csv(out / f"{table}.csv", index=False)
    page = _page(study, tables, charts, delta, progress, boot)
    (out / "report.html").write_text(page, encoding="utf-8")
    return [*written, *(out / f"{table}.csv" for table in tables), out / "report.html"]


def _coupled_axes(scores: pd.DataFrame, results: pd.DataFrame, order: list[str], spec: dict):
    """(scores, (optimizer, coupled axis) pairs, results) for the coupled maps; None where no optimizer
    sweeps an axis a coupled coordinate derives from (with the learning rate)."""
    steps = analysis.steps_per_epoch(results, spec)
    scores, results = analysis.coupled_axes(scores, steps), analysis.coupled_axes(results, steps)
    pairs = [(o, a) for o in order for a in analysis.AXIS_TITLES
             if a in results and {a, "lr"} <= set(analysis.swept_axes(results, o))]
    return (scores, results, pairs) if pairs else None


def _png(figure) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def maps_figure(scores: pd.DataFrame, order: list[str], metric: str, direction: str, results: pd.DataFrame,
                axes: list[tuple[str, str]] | None = None):
    """One heatmap per optimizer of ``order`` over its whole grid (``results``: every cell of the study),
    on the study's one colour range; ✕ where a seed diverged; hatched where no cell has finished yet
    (grey: finished, but no score: failed). ``axes``: (optimizer, x) pairs instead, each map over x and
    the learning rate (the coupled coordinates' maps)."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import Normalize
    from matplotlib.patches import Rectangle

    if axes is None:
        maps = [analysis.heatmap(scores, optimizer, direction, cells=results) for optimizer in order]  # lr across
    else:
        maps = [analysis.heatmap(scores, optimizer, direction, x=x, y="lr", cells=results) for optimizer, x in axes]
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
        ax.set_xlabel(analysis.AXIS_TITLES.get(hm.x, hm.x))
        ax.set_ylabel(analysis.AXIS_TITLES.get(hm.y, hm.y or ""))
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
    """Dodge et al.'s expected best of k per optimizer, with its 95 % configuration-bootstrap band."""
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(6.5, 4))
    for optimizer in order:
        band = analysis.expected_best_bands(scores, optimizer, direction)
        line, = ax.plot(band["k"], band["expected"], label=optimizer)
        ax.fill_between(band["k"], band["low"], band["high"], color=line.get_color(), alpha=0.15)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("configurations tried at random (k)")
    ax.set_ylabel(f"expected best {metric}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _png(figure)


def _table(frame: pd.DataFrame, titles: dict[str, str], css: str) -> str:
    head = "".join(f'<th title="{html.escape(titles.get(c, ""))}">{html.escape(c)}</th>' for c in frame.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>"
                   for row in frame.itertuples(index=False))
    return f'<table class="{css}"><tr>{head}</tr>{body}</table>'


def _page(study: dict, tables: dict[str, pd.DataFrame], charts: dict[str, bytes], delta: float, progress: str,
          boot: analysis.SeedBootstrap) -> str:
    """One HTML file with everything inline (images as data: URIs): it opens offline."""
    def image(chart: str, caption: str) -> str:
        data = base64.b64encode(charts[chart]).decode()
        return f'<figure><img alt="{chart}" src="data:image/png;base64,{data}"><figcaption>{caption}</figcaption></figure>'

    def items(texts: dict[str, str]) -> str:
        return "<ul>" + "".join(f"<li><b>{html.escape(c)}</b>: {html.escape(t)}</li>"
                                for c, t in texts.items()) + "</ul>"

    lit = analysis.LITERATURE
    board = _table(tables["leaderboard"], analysis.GLOSSARY, "leaderboard")
    legend = items(analysis.GLOSSARY)
    pairs = _table(tables["comparison"], {c: lit["comparison"] for c in tables["comparison"].columns}, "comparison")
    tunable = _table(tables["tunability"], lit, "tunability")
    slices = _table(tables["lr_sensitivity"], {"lr_sensitivity": lit["lr_sensitivity"]}, "lr-sensitivity")
    seeds = (f"{boot.resamples} resamples of {boot.seeds} seeds" if boot.seeds > 1
             else "one seed: nothing to resample, the intervals are points")
    literature = f"""<h2>Sensitivity measures from the literature</h2>
<h3>Which optimizer is less sensitive (seed bootstrap)</h3>{pairs}
<p>{html.escape(lit["comparison"])}; {html.escape(seeds)}.</p>
<h3>LR sensitivity per value of the other axes (Wortsman et al. 2023)</h3>{slices}
<p>{html.escape(lit["lr_sensitivity"])}; per row: the lr sweep at those values of the other axes.</p>
<h3>Tunability (Sivaprasad et al. 2020)</h3>{tunable}
<p>P_t: the best score after t configurations drawn at random ({analysis.SHUFFLES} seeded bootstrap orders of the
optimizer's T configurations, as idiap/hypaobp computes it); budget: T.</p>
{items({c: lit[c] for c in analysis.TUNABILITY})}"""
    coupled_caption = html.escape(lit["tau"] + "; " + lit["beta2_half_life"])
    coupled = (f'<h2>Coupled coordinates</h2>{image("coupled", coupled_caption)}'
               if "coupled" in charts else
               f'<p class="coupled">No coupled coordinates here ({html.escape(lit["tau"])}; '
               f'{html.escape(lit["beta2_half_life"])}): no optimizer sweeps the learning rate with weight_decay or '
               'beta2.</p>')
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
<h2>Leaderboard</h2>{board}{legend}
<h2>Robustness maps</h2>{image("maps", "one colour range for every optimizer; ✕: a seed diverged; hatched: not run yet; grey: finished "
                       "without a score (failed)")}
<h2>Sensitivity to the learning rate</h2>{image("sensitivity", "other hyperparameters at their best for each learning rate")}
<h2>Expected best of k</h2>{image("expected_best", "expected best score among k configurations drawn at random; "
                                   + html.escape(lit["expected_best"]))}
{literature}
{coupled}
</body></html>
"""


def _cell(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
