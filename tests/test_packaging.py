"""Packaging checks that hold for any install: stubs match the compiled modules,
py.typed ships, and the compiled kernels run on the OpenMP runtime they were
built with.  tools/test_wheel.sh sets FASTBN_EXPECT_* to also check that the
installed wheel (not the checkout) is under test."""
import ast
import importlib
import inspect
import os
from pathlib import Path

import numpy as np
import pytest

import fastbn
from fastbn import kernels

COMPILED = ["fastbn._core", "fastbn._activation", "fastbn._openmp_helpers", "fastbn._parallel"]


def _stub_functions(module):
    """{name: [parameter names]} of the top-level defs in the module's .pyi."""
    stub = Path(module.__file__).with_name(module.__name__.rsplit(".", 1)[1] + ".pyi")
    assert stub.is_file(), f"no type stub {stub} next to {module.__file__}"
    tree = ast.parse(stub.read_text())
    return {node.name: [a.arg for a in node.args.posonlyargs + node.args.args]
            for node in tree.body if isinstance(node, ast.FunctionDef)}


@pytest.mark.parametrize("name", COMPILED)
def test_stub_matches_compiled_module(name):
    module = importlib.import_module(name)
    public = {n: f for n, f in vars(module).items()
              if not n.startswith("_") and callable(f) and not inspect.isclass(f)}
    stubs = _stub_functions(module)
    assert set(stubs) == set(public), f"{name}.pyi defines {sorted(stubs)}, module has {sorted(public)}"
    for fname, func in public.items():
        params = list(inspect.signature(func).parameters)
        assert stubs[fname] == params, f"{name}.{fname}: stub {stubs[fname]} != compiled {params}"


def test_py_typed_ships():
    assert Path(fastbn.__file__).with_name("py.typed").is_file()


@pytest.mark.skipif("FASTBN_EXPECT_INSTALLED_IN" not in os.environ,
                    reason="set by tools/test_wheel.sh for an installed wheel")
def test_tests_run_against_installed_package():
    venv = os.path.realpath(os.environ["FASTBN_EXPECT_INSTALLED_IN"]) + os.sep
    for name in ["fastbn"] + COMPILED:
        where = os.path.realpath(importlib.import_module(name).__file__)
        assert where.startswith(venv), f"{name} imported from {where}, not from {venv}"
    runtime = fastbn.show_config(as_dict=True)["openmp_runtime"]
    if fastbn.show_config(as_dict=True)["openmp"]:
        # auditwheel's copy in site-packages/fastbn.libs, not the system libgomp
        assert runtime and os.path.realpath(runtime).startswith(venv), runtime


@pytest.mark.skipif("FASTBN_EXPECT_OPENMP" not in os.environ,
                    reason="set by tools/test_wheel.sh to the build it expects")
def test_openmp_as_built():
    want = os.environ["FASTBN_EXPECT_OPENMP"] == "1"
    cfg = fastbn.show_config(as_dict=True)
    assert cfg["openmp"] is want
    assert (cfg["openmp_version"] is not None) is want


def test_compiled_kernel_runs_threaded():
    """Big enough to take the parallel path, so the linked runtime really runs."""
    rng = np.random.default_rng()
    x = rng.standard_normal((64, 8, 300)) * 3.0 + 1.5
    ref = (x - x.mean(axis=(0, 2), keepdims=True)) / np.sqrt(x.var(axis=(0, 2), keepdims=True) + 1e-5)
    outs = []
    for n in (1, 2):
        with fastbn.threads(n):
            outs.append(kernels.batch_norm_forward(x)[0])
    np.testing.assert_allclose(outs[0], ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(outs[0], outs[1])
