"""The README's main command, end to end on synthetic data (small images)."""

import os

import pytest

from pump_keras.cli import demo
from pump_keras.data.split import read_manifest

pytestmark = pytest.mark.slow  # trains models or runs commands end to end


def test_demo_runs_end_to_end(tmp_path, capsys):
    out = str(tmp_path / "demo")
    assert demo.main(["--out", out, "--image-size", "32"]) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].startswith("Data demo on built-in synthetic pump recordings")
    # Generation reports its progress, one line per machine id.
    assert [line.split(",")[0] for line in printed.splitlines() if line.startswith("Synthetic recordings:")] == [
        f"Synthetic recordings: id_{machine_id} done" for machine_id in ("00", "02", "04", "06")]
    assert "80/80 files" in printed
    splits = read_manifest(os.path.join(out, "split.csv"))
    assert sum(len(v) for v in splits.values()) == 80
    assert os.path.getsize(os.path.join(out, "features.png")) > 10_000
    assert f"train: {len(splits['train'])} images of (32, 32, 3)" in printed


def test_demo_refuses_a_folder_it_cannot_use(tmp_path, capsys):
    from pump_keras.config import SyntheticConfig
    from pump_keras.data.index import index_dataset
    from pump_keras.data.split import split_records, write_manifest
    from pump_keras.data.synthetic import generate_dataset

    (tmp_path / "empty").mkdir()
    (tmp_path / "a_file").write_text("")
    tiny = SyntheticConfig(clips_per_class=10, seconds=0.5)
    for name in ("mine", "other"):
        generate_dataset(str(tmp_path / name), tiny)
    out = tmp_path / "out"
    out.mkdir()
    write_manifest(out / "split.csv", split_records(index_dataset(str(tmp_path / "other"))))
    for args, message in [
            (["--data-dir", str(tmp_path / "absent")], f"{tmp_path / 'absent'}: dataset directory does not exist"),
            (["--data-dir", str(tmp_path / "empty")], "no .wav files found"),
            (["--out", str(tmp_path / "a_file")], f"--out {tmp_path / 'a_file'} is a file"),
            (["--data-dir", str(tmp_path / "mine"), "--out", str(out)], "which is outside the data folder")]:
        status = demo.main(["--image-size", "32", *args] if "--out" in args else
                           ["--image-size", "32", "--out", str(tmp_path / "demo"), *args])
        errors = capsys.readouterr().err
        assert status == 2 and errors.startswith("error: ") and message in errors, (args, errors)
        assert "Traceback" not in errors
