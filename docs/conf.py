"""Sphinx configuration: `sphinx-build -W -b html docs docs/_build/html`."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from danga import __version__  # noqa: E402

project = "danga"
author = "the danga developers"
copyright = "the danga developers, MIT licence"
release = version = __version__
extensions = ["sphinx.ext.autodoc", "myst_parser"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": True}
myst_heading_anchors = 3
html_theme = "alabaster"
suppress_warnings = ["myst.xref_missing"]  # README anchors that point at GitHub-rendered headings
