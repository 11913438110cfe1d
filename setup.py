"""Build the Cython extensions; everything declarable lives in pyproject.toml.

OpenMP is detected the way scikit-learn does it: compile and link a tiny
OpenMP program with the compiler that will build the extensions.  When that
fails (Apple clang without libomp, a compiler without OpenMP) the extensions
are built serially and a warning says so.

Environment variables:
  FASTBN_DISABLE_OPENMP=1   force the serial build
  FASTBN_NATIVE=1           add -march=native (local builds only: not portable)
  FASTBN_BOUNDSCHECK=1      turn Cython bounds/wraparound checks on, for debugging
"""
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import warnings

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

OPENMP_TEST = textwrap.dedent(
    """
    #include <omp.h>
    #include <stdio.h>
    int main(void) {
        int n = 0;
        #pragma omp parallel reduction(+:n)
        n += 1;
        printf("%d", n > 0 && omp_get_max_threads() > 0);
        return 0;
    }
    """
)


def _env_flag(name):
    return os.environ.get(name, "0").strip().lower() in ("1", "true", "yes", "on")


def _openmp_candidates(compiler_type):
    """(compile_args, link_args) pairs to try, in order, for OpenMP."""
    gnu = (["-fopenmp"], ["-fopenmp"])
    if compiler_type == "msvc":
        return [(["/openmp"], [])]
    if sys.platform != "darwin":
        return [gnu]
    # Apple clang takes OpenMP pragmas only via -Xpreprocessor and needs libomp;
    # Homebrew's libomp is keg-only, so add its prefixes (other locations:
    # CPPFLAGS/LDFLAGS).  Last, GCC on macOS (CC=gcc-14) takes -fopenmp.
    apple = []
    for prefix in ("/opt/homebrew/opt/libomp", "/usr/local/opt/libomp"):
        if os.path.isdir(prefix):
            apple.append((["-Xpreprocessor", "-fopenmp", "-I" + prefix + "/include"],
                          ["-L" + prefix + "/lib", "-lomp"]))
    return apple + [(["-Xpreprocessor", "-fopenmp"], ["-lomp"]), gnu]


def _base_flags(compiler_type):
    if compiler_type == "msvc":
        return ["/O2", "/fp:precise"], []
    # -ffp-contract=off: no FMA contraction, so the same reduction gives the
    # same bits whichever code path (and thread count) computes it.
    # -fopenmp-simd: honour `omp simd` (vectorized sums, fastbn/_simd.h) even in
    # the serial build; it needs no OpenMP runtime.
    args = ["-O3", "-ffp-contract=off", "-fno-math-errno", "-fopenmp-simd"]
    if _env_flag("FASTBN_NATIVE"):
        args.append("-march=native")
    return args, []


def _compiles_openmp(compiler, compile_args, link_args):
    """Compile, link and run OPENMP_TEST; True when all three work."""
    tmp = tempfile.mkdtemp(prefix="fastbn-omp-")
    cwd = os.getcwd()
    try:
        os.chdir(tmp)
        with open("omp_test.c", "w") as f:
            f.write(OPENMP_TEST)
        objs = compiler.compile(["omp_test.c"], extra_postargs=compile_args)
        exe = "omp_test" + (".exe" if sys.platform == "win32" else "")
        compiler.link_executable(objs, "omp_test", extra_postargs=link_args)
        out = subprocess.run([os.path.join(tmp, exe)], capture_output=True, text=True, timeout=60)
        return out.returncode == 0 and out.stdout.strip() == "1"
    except Exception:  # any compile, link or run failure means "no OpenMP"
        return False
    finally:
        os.chdir(cwd)
        shutil.rmtree(tmp, ignore_errors=True)


class BuildExt(build_ext):
    def build_extensions(self):
        ctype = self.compiler.compiler_type
        cargs, largs = _base_flags(ctype)
        openmp = False
        if _env_flag("FASTBN_DISABLE_OPENMP"):
            print("fastbn: FASTBN_DISABLE_OPENMP is set; building the serial extension.")
        else:
            for ocargs, olargs in _openmp_candidates(ctype):
                if _compiles_openmp(self.compiler, ocargs, olargs):
                    openmp = True
                    cargs, largs = cargs + ocargs, largs + olargs
                    break
            else:
                warnings.warn(
                    "fastbn: this compiler could not build an OpenMP program; "
                    "building a SERIAL extension (correct, but single-threaded). "
                    "On macOS install libomp; set FASTBN_DISABLE_OPENMP=1 to silence this.",
                    stacklevel=1,
                )
        flags = " ".join(cargs + largs)
        for ext in self.extensions:
            ext.extra_compile_args = cargs + ext.extra_compile_args
            ext.extra_link_args = largs + ext.extra_link_args
            ext.define_macros += [("FASTBN_BUILD_FLAGS", '"%s"' % flags)]
        super().build_extensions()


def _extensions():
    import numpy
    from Cython.Build import cythonize

    debug = _env_flag("FASTBN_BOUNDSCHECK")
    directives = {
        "language_level": 3,
        "boundscheck": debug,
        "wraparound": debug,
        "cdivision": True,
        "initializedcheck": debug,
        "embedsignature": True,
    }
    exts = [
        Extension(
            "fastbn." + os.path.splitext(os.path.basename(p))[0],
            [p],
            include_dirs=["fastbn", numpy.get_include()],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        )
        for p in sorted(glob.glob(os.path.join("fastbn", "*.pyx")))
    ]
    return cythonize(exts, compiler_directives=directives, nthreads=os.cpu_count() or 1)


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildExt})
