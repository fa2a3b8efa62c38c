"""The demo (``python -m fastconv demo``) and the digits example, in short runs.

They need scikit-learn (the ``demo`` extra); without it they are skipped,
except the check that the demo explains what to install.
"""

import io
import json
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from fastconv import demo


def test_demo_one_epoch_json():
    pytest.importorskip("sklearn")
    out, err = io.StringIO(), io.StringIO()
    assert demo.main(["--epochs", "1", "--json", "--seed", "3"], stdout=out, stderr=err) == 0
    result = json.loads(out.getvalue().strip().splitlines()[-1])
    assert {"test_accuracy", "seconds", "epochs"} <= set(result)
    assert result["epochs"] == 1
    assert result["train_samples"] + result["test_samples"] == 1797
    assert 0.5 < result["test_accuracy"] <= 1.0     # one epoch already learns a lot
    assert "epoch   1/1" in err.getvalue()


def test_demo_is_deterministic():
    pytest.importorskip("sklearn")
    runs = []
    for _ in range(2):
        out = io.StringIO()
        demo.main(["--epochs", "1", "--json"], stdout=out, stderr=io.StringIO())
        result = json.loads(out.getvalue())
        runs.append((result["test_accuracy"], result["final_loss"]))
    assert runs[0] == runs[1]


def test_split_is_stratified():
    pytest.importorskip("sklearn")
    import numpy as np

    (x, y), (xt, yt) = demo.load_digits_split()
    assert x.shape[1:] == (1, 8, 8) and x.dtype == np.float32
    assert 0 <= x.min() and x.max() <= 1
    counts = np.bincount(yt, minlength=10)
    assert counts.min() >= 34 and counts.max() <= 37


def test_demo_plot(tmp_path):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    path = tmp_path / "curves.png"
    assert demo.main(["--epochs", "1", "--plot", str(path)], stdout=io.StringIO(),
                     stderr=io.StringIO()) == 0
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_demo_without_sklearn_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    err = io.StringIO()
    assert demo.main(["--epochs", "1"], stdout=io.StringIO(), stderr=err) == 2
    assert "fastconv[demo]" in err.getvalue()


def test_demo_rejects_bad_arguments():
    with pytest.raises(SystemExit):
        demo.main(["--epochs", "0"], stdout=io.StringIO(), stderr=io.StringIO())


def test_command_line_entry_point():
    pytest.importorskip("sklearn")
    proc = subprocess.run([sys.executable, "-m", "fastconv", "demo", "--epochs", "1", "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["epochs"] == 1


def test_one_conv_example():
    pytest.importorskip("sklearn")
    script = Path(__file__).resolve().parents[1] / "examples" / "one_conv_digits.py"
    if not script.exists():
        pytest.skip("examples/ not available (tests run outside the source tree)")
    lines = []
    acc = runpy.run_path(str(script))["main"](epochs=2, out=lines.append)
    assert acc > 0.8
    assert "total params: 1,370" in lines[0]


@pytest.mark.parametrize("args", [["--seed", "-1"], ["--lr", "inf"], ["--threads", "100000"],
                                  ["--plot", "/nonexistent-folder/x.png"]])
def test_demo_bad_arguments_are_usage_errors(args):
    if args[0] == "--plot":
        pytest.importorskip("matplotlib")
    with pytest.raises(SystemExit) as info:
        demo.main(args, stdout=io.StringIO(), stderr=io.StringIO())
    assert info.value.code == 2


def test_options_before_the_demo_command():
    pytest.importorskip("sklearn")
    proc = subprocess.run([sys.executable, "-m", "fastconv", "--threads", "1", "demo",
                           "--epochs", "1", "--json"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["threads"] == 1
