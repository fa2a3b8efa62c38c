#!/usr/bin/env bash
# The full check, as CI runs it (.ci/run) and as the README's test command:
#   1. build the sdist and the manylinux wheel (scripts/build_wheel.sh);
#   2. install the wheel, with the test extras, into a fresh venv that has no
#      Cython (so nothing can be compiled behind our back);
#   3. run the test suite from outside the source tree, against the
#      installed package.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
PYTHON=${PYTHON:-python3}

bash scripts/build_wheel.sh
wheel=$(ls dist/fastconv-*.whl)

rm -rf .venv-wheel
"$PYTHON" -m venv .venv-wheel
.venv-wheel/bin/pip install -q "$wheel[test,torch,demo]"
if .venv-wheel/bin/python -c "import Cython" 2>/dev/null; then
    echo "check.sh: the test venv must not have Cython" >&2
    exit 1
fi

outside=$(mktemp -d)
trap 'rm -rf "$outside"' EXIT
cd "$outside"
"$repo/.venv-wheel/bin/python" - <<'PY'
import fastconv, sys
print(f"testing the installed fastconv {fastconv.__version__} from {fastconv.__file__}")
if "/site-packages/" not in fastconv.__file__:
    sys.exit("check.sh: fastconv was not imported from the installed wheel")
PY
"$repo/.venv-wheel/bin/python" -m pytest "$repo/tests" -p no:cacheprovider

# 4. the C-level API from a downstream Cython extension: the same venv plus
#    Cython builds examples/cimport against the installed wheel's .pxd.
"$repo/.venv-wheel/bin/pip" install -q Cython setuptools
cp -r "$repo/examples/cimport" "$outside/cimport"
cd "$outside/cimport"
"$repo/.venv-wheel/bin/python" setup.py -q build_ext --inplace
"$repo/.venv-wheel/bin/python" run.py
