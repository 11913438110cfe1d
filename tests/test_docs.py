"""The documentation holds: every Python block of the README runs as pasted, the API
reference (docs/api/*.rst, rendered by Sphinx) lists every public name, and the public
callables' numpydoc docstrings document each of their parameters.

The reference has one page per public module, ``docs/api/<module>.rst``, whose
``autosummary`` lists give the module's public objects, one line each.  The public
modules are ``fastbn``, the modules in a public module's ``__all__`` and those in
``EXTRA_PUBLIC``; a module under a public package that is none of these must be an
implementation module (everything in its ``__all__`` re-exported by the package) or be
listed in ``INTERNAL``.  No Sphinx is needed to run these tests.
"""
import importlib
import pkgutil
import re
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
API = ROOT / "docs" / "api"

# Public modules that no public module's __all__ names (imported on their own).
EXTRA_PUBLIC = {
    "fastbn.distributed": "imported on its own (`from fastbn import distributed`): it needs mpi4py",
    "fastbn.checkpoint": "saving and loading training state",
    "fastbn.models": "imported on its own (`from fastbn import models`), as torchvision.models",
}
# Modules under a public package that are neither documented nor plain implementation
# modules, and why.
INTERNAL = {
    "fastbn.autograd": "the tape; its public names are re-exported by fastbn",
    "fastbn.tensor": "Tensor's methods; its public names are re-exported by fastbn",
    "fastbn.gradcheck": "fastbn.gradcheck is re-exported by fastbn",
    "fastbn.random": "fastbn.manual_seed is re-exported by fastbn; the rest serves checkpoints",
    "fastbn.progress": "the trainer's progress bar",
    "fastbn.train": "the trainer behind `python -m fastbn train`",
    "fastbn.cli": "the command line",
    "fastbn.experiments": "the reproductions behind `python -m fastbn reproduce`",
}


# ------------------------------------------------------------------------- README
def _readme_blocks():
    text = README.read_text(encoding="utf-8")
    blocks = []
    for m in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M):
        line = text.count("\n", 0, m.start()) + 1
        blocks.append(pytest.param(m.group(1), id=f"README.md:{line}"))
    return blocks


def test_readme_has_python_blocks():
    assert _readme_blocks(), "README.md has no ```python block"


@pytest.mark.parametrize("code", _readme_blocks())
def test_readme_python_block_runs(code, run_fastbn):
    """Each block on its own, in a fresh interpreter in a scratch directory, as a user
    pasting it would run it."""
    result = run_fastbn(code=code, timeout=120)
    assert result.returncode == 0, f"the block failed:\n{code}\n{result.stderr}"


# ----------------------------------------------------------------- API reference
def _pages():
    """{module: page path} and [(module, name, page, line)] from docs/api/*.rst."""
    pages, entries = {}, []
    for page in sorted(API.glob("*.rst")):
        module, in_list = None, False
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            directive = re.match(r"\.\. (currentmodule|automodule|module)::\s*(\S+)", line)
            if directive:
                module, in_list = directive.group(2), False
                pages.setdefault(module, page)
            elif re.match(r"\.\. autosummary::", line):
                in_list = True
            elif in_list and line and not line[0].isspace():
                in_list = False
            elif in_list and line.strip() and not line.strip().startswith((":", "..")):
                assert module, f"{page.name}:{number}: autosummary before any currentmodule"
                entries.append((module, line.strip(), page, number))
    return pages, entries


def _is_private(name):
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _public_modules():
    """{module name: why it is public}, following __all__ from fastbn."""
    public = {"fastbn": "the package"}
    public.update(EXTRA_PUBLIC)
    todo = list(public)
    while todo:
        module = importlib.import_module(todo.pop())
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            if isinstance(obj, types.ModuleType) and obj.__name__ not in public:
                public[obj.__name__] = f"in {module.__name__}.__all__"
                todo.append(obj.__name__)
    return public


def _rel(path):
    return path.relative_to(ROOT).as_posix()


def test_every_public_name_is_in_the_reference():
    pages, entries = _pages()
    listed = {(module, name) for module, name, _, _ in entries}
    problems = []
    for modname, why in sorted(_public_modules().items()):
        page = pages.get(modname)
        if page is None:
            problems.append(f"{modname} is public ({why}) but has no page: create "
                            f"docs/api/{modname}.rst (as docs/api/fastbn.nn.utils.rst) and "
                            f"add the line '   {modname}' to docs/api/index.rst")
            continue
        module = importlib.import_module(modname)
        assert hasattr(module, "__all__"), f"{modname} has no __all__"
        for name in module.__all__:
            if _is_private(name) or isinstance(getattr(module, name), types.ModuleType):
                continue  # submodules get a page of their own (checked above)
            if (modname, name) not in listed:
                problems.append(f"{modname}.{name} is in {modname}.__all__ but not in the "
                                f"reference: add the line '   {name}' to an autosummary list "
                                f"in {_rel(page)}")
    assert not problems, "\n".join(problems)


def test_every_listed_name_is_public():
    """A name removed or renamed in __all__ leaves no stale line behind."""
    problems = []
    for modname, name, page, number in _pages()[1]:
        module = importlib.import_module(modname)
        if name not in getattr(module, "__all__", ()):
            problems.append(f"{_rel(page)}:{number}: {modname}.{name} is not in "
                            f"{modname}.__all__: remove the line or export the name")
    assert not problems, "\n".join(problems)


def test_every_page_is_in_the_index():
    index = (API / "index.rst").read_text(encoding="utf-8")
    toctree = set(re.findall(r"^   (\S+)$", index, re.M))
    missing = [p.stem for p in API.glob("*.rst") if p.stem != "index" and p.stem not in toctree]
    assert not missing, f"add these lines to the toctree of docs/api/index.rst: {missing}"


def test_every_module_is_documented_or_internal():
    """A new module (fastbn.models, say) gets a page, or is an implementation module of a
    package that re-exports its names, or is declared internal here."""
    public = _public_modules()
    problems = []
    for package in sorted(public):
        pkg = importlib.import_module(package)
        for info in pkgutil.iter_modules(getattr(pkg, "__path__", [])):
            name = f"{package}.{info.name}"
            if info.name.startswith("_") or name in public or name in INTERNAL:
                continue
            exported = set(getattr(importlib.import_module(name), "__all__", ()))
            stray = sorted(exported - set(pkg.__all__))
            if stray:
                problems.append(f"{name} exports {stray}, which {package}.__all__ does not: "
                                f"re-export them from {package}, give {name} a page "
                                f"(docs/api/{name}.rst), or add it to INTERNAL in {__file__}")
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------------- docstrings
# The modules whose every public callable documents each of its parameters.
DOCUMENTED = ["fastbn", "fastbn.nn", "fastbn.nn.functional", "fastbn.optim", "fastbn.data",
              "fastbn.kernels", "fastbn.distributed"]


def _public_callables():
    """{id: (qualified public name, object)}, each object once (under its first name)."""
    found = {}
    for modname in DOCUMENTED:
        module = importlib.import_module(modname)
        for name in module.__all__:
            obj = getattr(module, name)
            if not _is_private(name) and callable(obj) and not isinstance(obj, types.ModuleType):
                found.setdefault(id(obj), (f"{modname}.{name}", obj))
    return found.values()


def _docstring_problems(qualname, obj, NumpyDocString):
    """What the numpydoc docstring of obj lacks: a one-line summary, or a Parameters entry
    for one of its signature's parameters (a class's: its constructor's).  Only obj's own
    docstring counts, not one inherited from a base class."""
    import inspect
    import warnings

    text = inspect.cleandoc(obj.__doc__ or "")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # numpydoc warns about unknown sections
            doc = NumpyDocString(text)
    except Exception as exc:
        return [f"{qualname}: numpydoc cannot parse its docstring: {exc}"]
    problems = []
    if not doc["Summary"]:
        problems.append(f"{qualname}: no summary line")
    elif len(doc["Summary"]) > 1:
        problems.append(f"{qualname}: the summary spans {len(doc['Summary'])} lines, "
                        "not one (a blank line after the first ends it)")
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return problems + [f"{qualname}: inspect.signature cannot read its parameters"]
    documented = {part.strip().lstrip("*")
                  for entry in doc["Parameters"] for part in entry.name.split(",")}
    missing = [name for name in signature.parameters if name not in documented]
    if missing:
        problems.append(f"{qualname}: Parameters section lacks {', '.join(missing)}")
    return problems


def test_every_public_callable_documents_its_parameters():
    """numpydoc docstrings for the API reference: each public callable of DOCUMENTED has a
    one-line summary and a Parameters entry for every parameter (``*args``/``**kwargs``
    documented as such; ``a, b : ...`` covers both)."""
    docscrape = pytest.importorskip("numpydoc.docscrape")
    problems = [p for qualname, obj in _public_callables()
                for p in _docstring_problems(qualname, obj, docscrape.NumpyDocString)]
    assert not problems, (f"{len(problems)} docstring problems (numpydoc style, see "
                          "CONTRIBUTING.md):\n" + "\n".join(problems))


def test_docstring_check_finds_an_undocumented_parameter():
    """The check above can fail: a function with an undocumented parameter, a multi-line
    summary and none at all are each reported."""
    docscrape = pytest.importorskip("numpydoc.docscrape")

    def documented(a, *args, b=1, **kwargs):
        """One line.

        Parameters
        ----------
        a, b : int
            Numbers.
        *args, **kwargs
            Passed on.
        """

    def undocumented(a, c):
        """One line.

        Parameters
        ----------
        a : int
        """

    def long_summary():
        """Two
        lines."""

    def no_doc(x):
        pass

    check = lambda f: _docstring_problems(f.__name__, f, docscrape.NumpyDocString)  # noqa: E731
    assert check(documented) == []
    assert check(undocumented) == ["undocumented: Parameters section lacks c"]
    assert check(long_summary) == ["long_summary: the summary spans 2 lines, not one (a "
                                   "blank line after the first ends it)"]
    assert check(no_doc) == ["no_doc: no summary line", "no_doc: Parameters section lacks x"]
