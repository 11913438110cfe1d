"""Sphinx configuration: the guides (Markdown, through MyST) and the API reference,
generated from the docstrings by autosummary + numpydoc as NumPy and SciPy do.

    pip install -e ".[docs]" && python -m sphinx -W -b html docs docs/_build

fastbn is imported from the environment (install it, or build in place and put the
checkout on PYTHONPATH); fastbn.distributed imports mpi4py only when called, so no
MPI is needed to build.
"""
import fastbn

project = "fastbn"
author = "the fastbn developers"
copyright = "the fastbn developers"
release = fastbn.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
    "myst_parser",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
templates_path = ["_templates"]

# One page per public name (docs/api/generated/, written at build time), each
# rendered by numpydoc; a class page lists its methods (see _templates).
autosummary_generate = True
autosummary_imported_members = False
autodoc_typehints = "none"
autodoc_member_order = "bysource"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False

myst_heading_anchors = 3

html_theme = "alabaster"
html_title = f"fastbn {release}"
html_static_path = []
