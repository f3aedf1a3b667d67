"""The dashboard's pages: each module has a ``render()`` that draws one page with Streamlit.

(Not named ``pages/``: Streamlit would take a ``pages/`` folder beside app.py for its own
file-based navigation and run these modules as scripts.)
"""
