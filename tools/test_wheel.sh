#!/usr/bin/env bash
# Test a built fastbn wheel the way a user gets it: installed into a FRESH venv,
# imported from outside the checkout.
#
# Usage:  tools/test_wheel.sh [WHEELHOUSE]      (default: wheelhouse/, as
#                                               written by tools/build_wheels.sh)
# Checks, failing on the first miss:
#   1. the wheel holds the extensions, the .pyi stubs, py.typed, every file of
#      fastbn/datasets, no .c files, and (OpenMP builds) libgomp in fastbn.libs/;
#      the sdist next to it holds .pyx/.pxd/.h sources, tests, README and no
#      generated .c or binaries;
#   2. `import fastbn` from a scratch directory loads the venv's copy, and
#      show_config(as_dict=True)["openmp"] is True (False for a serial build);
#   3. ldd resolves every extension's OpenMP runtime to the wheel's fastbn.libs/;
#   4. the test suite (tests/ of this checkout) passes against the installed
#      package: pytest runs from the scratch directory in importlib mode, so the
#      checkout is never on sys.path (tests/test_packaging.py double-checks).
# FASTBN_DISABLE_OPENMP=1 expects the serial build (openmp False, no libgomp).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
house=${1:-$root/wheelhouse}
python=${PYTHON:-python3}
case "${FASTBN_DISABLE_OPENMP:-0}" in
    1|true|yes|on) openmp=0 ;;
    *) openmp=1 ;;
esac
unset PYTHONPATH  # the checkout must not leak in

shopt -s nullglob
wheels=("$house"/fastbn-*manylinux*.whl)
sdists=("$house"/fastbn-*.tar.gz)
if (( ${#wheels[@]} != 1 || ${#sdists[@]} != 1 )); then
    echo "expected one manylinux wheel and one sdist in $house" >&2
    exit 1
fi
wheel=${wheels[0]}
sdist=${sdists[0]}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
venv=$tmp/venv
scratch=$tmp/scratch
mkdir "$scratch"

echo "== contents of $(basename "$wheel") and $(basename "$sdist")"
"$python" - "$wheel" "$sdist" "$root" "$openmp" <<'EOF'
import fnmatch, glob, os, sys, tarfile, zipfile

wheel, sdist, root, openmp = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
problems = []

def need(names, pattern, where):
    if not fnmatch.filter(names, pattern):
        problems.append(f"{where}: nothing matches {pattern}")

def forbid(names, pattern, where):
    for name in fnmatch.filter(names, pattern):
        problems.append(f"{where}: must not contain {name}")

w = zipfile.ZipFile(wheel).namelist()
for pattern in ("fastbn/_core.*.so", "fastbn/_openmp_helpers.*.so", "fastbn/_core.pyi",
                "fastbn/_openmp_helpers.pyi", "fastbn/py.typed", "fastbn/__init__.py"):
    need(w, pattern, "wheel")
forbid(w, "*.c", "wheel")
(need if openmp else forbid)(w, "fastbn.libs/libgomp*.so*", "wheel")
data_dir = os.path.join(root, "fastbn", "datasets")
for dirpath, _, files in os.walk(data_dir):
    for f in files:
        rel = os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/")
        if "__pycache__" not in rel and rel not in w:
            problems.append(f"wheel: dataset file {rel} missing")

with tarfile.open(sdist) as t:
    # drop the top folder fastbn-X.Y.Z/
    s = [n.split("/", 1)[1] for n in t.getnames() if "/" in n]
sources = [os.path.relpath(p, root).replace(os.sep, "/")
           for ext in ("pyx", "pxd", "h", "pyi")
           for p in glob.glob(os.path.join(root, "fastbn", "*." + ext))]
for pattern in sources + ["fastbn/py.typed", "README.md", "pyproject.toml", "setup.py",
                          "MANIFEST.in", "tests/*"]:
    need(s, pattern, "sdist")
for pattern in ("*.c", "*.so", "*.o", "*.pyc"):
    forbid(s, pattern, "sdist")

print(f"wheel: {len(w)} files; sdist: {len(s)} files")
print("\n".join(n for n in w if n.startswith("fastbn.libs/")) or "no bundled libraries")
if problems:
    sys.exit("\n".join(problems))
EOF

echo "== fresh venv: $venv"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q "$wheel[test]"

cd "$scratch"
echo "== import check from $scratch"
"$venv/bin/python" - "$venv" "$openmp" <<'EOF'
import os, sys
import fastbn

venv, want = os.path.realpath(sys.argv[1]), sys.argv[2] == "1"
where = os.path.realpath(fastbn.__file__)
assert where.startswith(venv + os.sep), f"fastbn imported from {where}, not the venv {venv}"
cfg = fastbn.show_config(as_dict=True)
assert cfg["openmp"] is want, f'show_config()["openmp"] is {cfg["openmp"]}, expected {want}'
print(f"fastbn {cfg['version']} from {where}")
print(f"openmp={cfg['openmp']} runtime={cfg['openmp_runtime']} threads={cfg['num_threads']}")
EOF

echo "== ldd of the installed extensions"
# The kernels run on fastbn's own thread team; the OpenMP runtime is linked only by
# the extensions that call it (with --as-needed, _openmp_helpers alone).  Every
# extension that links one must get the wheel's copy.
pkg=$("$venv/bin/python" -c "import fastbn, os; print(os.path.dirname(fastbn.__file__))")
libs=$(cd "$pkg/../fastbn.libs" 2>/dev/null && pwd -P || true)
linked=0
for ext in "$pkg"/*.so; do
    gomp=$(ldd "$ext" | grep -E 'lib(g|i)?omp' || true)
    [[ -z $gomp ]] && continue
    linked=$((linked + 1))
    path=$(awk '{print $3}' <<<"$gomp")
    echo "$(basename "$ext"): $path"
    if (( ! openmp )); then
        echo "serial build: $(basename "$ext") links an OpenMP runtime" >&2
        exit 1
    fi
    [[ -n $libs && -n $path && $(realpath "$path") == "$libs"/* ]] \
        || { echo "$(basename "$ext"): OpenMP runtime resolves to '$path', not the wheel's fastbn.libs/" >&2; exit 1; }
done
if (( openmp && linked == 0 )); then
    echo "OpenMP build, but no extension links an OpenMP runtime" >&2
    exit 1
fi

echo "== pytest against the installed package"
FASTBN_EXPECT_INSTALLED_IN=$venv FASTBN_EXPECT_OPENMP=$openmp \
    "$venv/bin/python" -m pytest -q -p no:cacheprovider \
    --rootdir "$root" --import-mode=importlib "$root/tests"
