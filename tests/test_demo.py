"""The README's main command, end to end on synthetic data (small images)."""

import os

from pump_keras import demo
from pump_keras.data.split import read_manifest


def test_demo_runs_end_to_end(tmp_path, capsys):
    out = str(tmp_path / "demo")
    assert demo.main(["--out", out, "--image-size", "32"]) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].startswith("Data demo on built-in synthetic pump recordings")
    splits = read_manifest(os.path.join(out, "split.csv"))
    assert sum(len(v) for v in splits.values()) == 80
    assert os.path.getsize(os.path.join(out, "features.png")) > 10_000
    assert "train: 56 images of (32, 32, 3)" in printed
