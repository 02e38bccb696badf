"""adamscape dashboard: robustness maps over a results database (read-only).

Run with ``adamscape dashboard`` (the database comes from ADAMSCAPE_DB). It connects read-only: an
empty database, or one at another schema version, is an error message, never a migration.

This is the entry script Streamlit runs (``streamlit run dashboard/app.py``): the sidebar's choices and
which page draws. The pages are ``dashboard/views/`` (one module each), the database access
``dashboard/data.py``, the figures ``dashboard/figures.py``, the shared pieces ``dashboard/widgets.py``.
Streamlit puts this script's folder, not the repository, first on ``sys.path``: ``dashboard`` and
``study`` import as the installed project (``make install``: editable, from the repository).
"""

from __future__ import annotations

import os

import streamlit as st

from dashboard.data import engine, load_results
from dashboard.views import cells, compare, maps, overview, sensitivity, studies
from dashboard.widgets import progress, queue
from study import analysis, store
from study.errors import UserError
from study.statuses import OPEN

st.set_page_config(page_title="adamscape", layout="wide")

PAGES = ("Maps", "Overview", "Sensitivity", "Cells", "Compare studies", "Studies")


def main() -> None:
    url = os.environ.get("ADAMSCAPE_DB", store.DEFAULT_DB)
    st.title("adamscape · robustness maps")
    try:
        db = engine(url)
    except UserError as exc:
        st.error(str(exc))
        return
    names = store.list_studies(db)
    if not names:
        st.info("No studies yet: `adamscape submit examples/quickstart.toml --run`.")
        return
    queue(db)
    name = st.sidebar.selectbox("study", names, index=len(names) - 1, key="study")
    page = st.sidebar.radio("page", PAGES, key="page")
    study = store.get_study(db, name)
    metric, direction = study["metric"], study["direction"]
    reference = st.sidebar.radio("good region: within δ of", ["the study's best", "each optimizer's own best"],
                                 help="the study's best compares optimizers; an optimizer's own best does not",
                                 key="reference")
    relative = st.sidebar.radio("good region tolerance δ", ["relative", "absolute"], key="tolerance") == "relative"
    delta = st.sidebar.number_input("δ", min_value=0.0, value=0.05 if relative else 0.02, step=0.01, format="%.3f",
                                    key="delta")
    st.caption(f"task **{study['task']}** · metric **{metric}** ({direction}) · database `{db.url!r}`")

    counts = store.status_counts(db, study["id"])
    running = study["state"] == "active" and any(counts.get(s) for s in OPEN)

    @st.fragment(run_every=5 if running else None)  # refreshed only while the study runs
    def live() -> None:
        counts = store.status_counts(db, study["id"])
        progress(counts, study["total_cells"])
        results = load_results(url, name)
        scores = analysis.cell_scores(results, metric, direction)
        if scores.empty:
            st.info("No finished cells yet.")
            return
        summary = {r.optimizer: r for r in analysis.robustness(
            scores, direction, delta, relative, reference="study" if reference.startswith("the study") else "optimizer")}
        shown = [o for o in study["spec"]["optimizers"] if o in summary]  # file order
        waiting = [o for o in study["spec"]["optimizers"] if o not in summary]
        if waiting:
            st.caption(f"no finished cell yet: {', '.join(waiting)}")
        if page in ("Maps", "Overview", "Sensitivity"):
            board, boot = analysis.leaderboard(
                results, metric, direction, delta, relative,
                reference="study" if reference.startswith("the study") else "optimizer", order=shown)
        if page == "Maps":
            maps.maps_page(scores, shown, summary, metric, direction, reference, delta, relative, results, board,
                           study["spec"])
        elif page == "Overview":
            overview.overview_page({o: summary[o] for o in shown}, results, metric, direction, board, boot, scores)
        elif page == "Sensitivity":
            sensitivity.sensitivity_page(scores, shown, metric, direction, board)
        elif page == "Cells":
            cells.cells_page(url, name, results, shown)
        elif page == "Compare studies":
            compare.compare_page(url, db, names, delta)
        else:
            studies.studies_page(url, db)

    live()


main()
