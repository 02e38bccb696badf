"""The dashboard's pages, one module each: ``maps``, ``overview``, ``sensitivity``, ``cells``, ``compare``,
``studies``; ``dashboard/app.py`` picks which one draws (its sidebar's "page" radio).

Why ``views/`` and not ``pages/``: Streamlit (1.67 included) treats a folder named ``pages`` beside the
entry script as a multipage app of its own (the "v1" multipage apps): when ``dashboard/pages/`` exists,
every ``*.py`` in it but ``__init__.py`` becomes a page of the sidebar's navigation, and the entry script
is run through ``st.navigation`` instead of directly (``streamlit.runtime.pages_manager`` and
``scriptrunner.script_runner._mpa_v1``). These modules are functions the entry script calls, not scripts,
so they live under another name.
"""
