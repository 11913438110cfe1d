#!/usr/bin/env bash
# CI step, run by .ci/run after the main tests: build the sdist and the
# manylinux wheel (libgomp bundled), then install the wheel into a fresh venv
# and run the test suite against it.  Needs python3 and a C compiler; the rest
# comes from PyPI.  About 1 minute on 2 cores plus the test suite's own time.
set -euo pipefail
cd "$(dirname "$0")/.."

house=$(mktemp -d)
trap 'rm -rf "$house"' EXIT
tools/build_wheels.sh "$house"
tools/test_wheel.sh "$house"
