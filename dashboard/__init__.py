"""adamscape's Streamlit dashboard (read-only), as a package:

- ``app.py``: the entry point Streamlit runs (``adamscape dashboard``): page config, the sidebar's
  choices, and which page draws;
- ``data.py``: the database connection and the cached loaders;
- ``figures.py``: the plotly figures, built from ``study.analysis`` results (no Streamlit calls);
- ``widgets.py``: pieces every page shares: progress bar, queue, CSV download;
- ``views/``: one module per page (Maps, Overview, Sensitivity, Cells, Compare studies, Studies).
"""
