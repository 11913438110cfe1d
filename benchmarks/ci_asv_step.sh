#!/usr/bin/env bash
# asv step of .ci/run (bash benchmarks/ci_asv_step.sh), with fastbn installed in
# the active virtual environment.  Fails when a benchmark is broken:
#   asv check  - every benchmark imports and has a valid signature;
#   smoke run  - every benchmark runs once (--quick) against the installed
#                fastbn (--python=same), nothing saved (--dry-run); asv exits
#                2 when one fails.  Skipped benchmarks (no torch, no fastbn.nn
#                yet) are not failures.
# This whole step took 108 s on the 2-core dev machine (under load, no torch,
# fastbn.nn not yet merged, so its benchmarks skipped).  Set
# FASTBN_CI_ASV_SMOKE=0 to skip it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

python -m pip install "asv>=0.6" virtualenv
asv machine --yes
asv check --python=same
if [ "${FASTBN_CI_ASV_SMOKE:-1}" != 0 ]; then
    asv run --python=same --quick --dry-run --show-stderr
fi
