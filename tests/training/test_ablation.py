"""`python -m pump_keras.ablate`: a two-axis grid end to end on CPU, resumable per cell."""

import json
import os
import subprocess
import sys

import pytest

from pump_keras.training.ablation import GRIDS, TABLES, cells, mean_std, parse_axis
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow  # trains models or runs commands end to end

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
COMMAND = ["--axis", "model.efficientnetv2_s.attention=se,improved_cbam", "--axis", "features.kind=mel",
           "--seeds", "1", "--set", "train.epochs=1", "--set", "synthetic.clips_per_class=8",
           "--set", "synthetic.seconds=1.0", "--set", "features.image_size=32", "--set", "data.batch_size=8",
           # One epoch of the quick recipe on 32 px images can grow the weights
           # until the scores overflow; clipping keeps the cells finite.
           "--set", "train.gradient_clip_norm=1.0"]


def ablate(out, *extra):
    """The CLI in a subprocess (its first call: the real entry point)."""
    return subprocess.run([sys.executable, "-m", "pump_keras.ablate", "--out", str(out), *COMMAND, *extra],
                          cwd=REPO_ROOT, env=ENV, capture_output=True, text=True, timeout=900)


def ablate_here(out, capsys):
    """The CLI in this process; returns (status, stderr)."""
    from pump_keras.cli.ablate import main

    status = main(["--out", str(out), *COMMAND])
    return status, capsys.readouterr().err


def test_grid_of_two_axes_runs_and_resumes_per_cell(tmp_path, capsys):
    out = tmp_path / "ablate"
    result = ablate(out)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    rows = results["custom"]["rows"]
    assert list(rows) == ["se+mel", "improved_cbam+mel"]
    assert results["custom"]["axes"] == [["model.efficientnetv2_s.attention", ["se", "improved_cbam"]],
                                         ["features.kind", ["mel"]]]
    assert rows["improved_cbam+mel"]["params"] > rows["se+mel"]["params"]
    assert all(row["gflops"] > 0 for row in rows.values())
    for row in rows.values():
        assert {"accuracy", "auc", "pauc", "balanced_accuracy", "f1"} <= set(row["seeds"][0])
    table = (out / "results.md").read_text()
    assert "| cell | params | GFLOPs/img | accuracy | balanced accuracy | F1 | AUC | pAUC |" in table
    assert table.count("| improved_cbam+") == 1 and "SYNTHETIC" in result.stdout

    # A finished cell is read back, not retrained; one without metrics resumes its run.
    kept = out / "custom" / "improved_cbam+mel" / "seed-0" / "best.keras"
    before = os.path.getmtime(kept)
    removed = out / "custom" / "se+mel" / "seed-0" / "metrics.json"
    removed.unlink()
    status, errors = ablate_here(out, capsys)
    assert status == 0, errors[-3000:]
    assert os.path.getmtime(kept) == before
    assert removed.exists()
    rerun = json.loads((out / "results.json").read_text())["custom"]["rows"]
    assert rerun["improved_cbam+mel"] == rows["improved_cbam+mel"]
    assert rerun["se+mel"]["seeds"] == rows["se+mel"]["seeds"]  # the resumed cell ends where it had


def test_grid_definitions_and_helpers():
    assert GRIDS["tables"] == ("backbones", "attentions", "features")
    assert TABLES["attentions"][0][1][-1] == "improved_cbam" and len(TABLES["attentions"][0][1]) == 7
    assert parse_axis("model.attention=se, cbam") == ("model.attention", ("se", "cbam"))
    with pytest.raises(ValueError, match="must look like"):
        parse_axis("model.attention")
    assert cells([("a.b", ("1", "2")), ("c.d", ("x",))]) == [("1+x", ["a.b=1", "c.d=x"]),
                                                            ("2+x", ["a.b=2", "c.d=x"])]
    assert mean_std([0.5, 0.7]) == "0.600 +- 0.141" and mean_std([0.5]) == "0.500"
    assert mean_std([float("nan")]) == "n/a"


TINY_SYNTHETIC = ["synthetic.clips_per_class=1", "synthetic.abnormal_clips_per_id=1", "synthetic.seconds=0.25",
                  "synthetic.machine_ids=[0]", "synthetic.channels=1"]


def test_synthetic_recordings_of_other_settings_are_refused(tmp_path):
    from pump_keras.training.ablation import run_grid

    out = tmp_path / "ablate"
    run_grid({}, 1, str(out), overrides=TINY_SYNTHETIC, log=lambda message: None)
    clip = next((out / "synthetic").rglob("*.wav"))
    before = clip.stat().st_mtime_ns
    run_grid({}, 1, str(out), overrides=TINY_SYNTHETIC, log=lambda message: None)  # same settings: reused
    assert clip.stat().st_mtime_ns == before
    with pytest.raises(ValueError, match=r"other synthetic settings.*clips_per_class: 1 -> 2.*--out"):
        run_grid({}, 1, str(out), overrides=[*TINY_SYNTHETIC, "synthetic.clips_per_class=2"],
                 log=lambda message: None)
    assert clip.stat().st_mtime_ns == before and len(list((out / "synthetic").rglob("*.wav"))) == 2


def test_a_finished_cell_of_another_config_is_not_read_back(tmp_path):
    from pump_keras.config import config_to_json, load_config
    from pump_keras.training.ablation import run_grid

    out = tmp_path / "ablate"
    cell = out / "custom" / "mel" / "seed-0"
    cell.mkdir(parents=True)
    old = load_config("quick", overrides=[*TINY_SYNTHETIC, "train.epochs=5"])
    (cell / "config.json").write_text(config_to_json(old))
    (cell / "metrics.json").write_text(json.dumps({"test": {"accuracy": 1.0}}))
    with pytest.raises(ValueError, match=r"another config.*train.epochs: 5 -> 1"):
        run_grid({"custom": [("features.kind", ("mel",))]}, 1, str(out),
                 overrides=[*TINY_SYNTHETIC, "train.epochs=1"], log=lambda message: None)


def test_backbones_table_is_the_papers_table_4_and_its_text():
    from pump_keras.models import available_models

    backbones = TABLES["backbones"][0][1]
    assert TABLES["backbones"][0][0] == "model.name"
    assert [f"efficientnet_b{i}" for i in range(8)] == [name for name in backbones if name.startswith("efficientnet_b")]
    assert {"efficientnetv2_s", "efficientnetv2s_keras", "mobilevit", "plain_cnn", "resnet50", "conformer"} < set(
        backbones)
    assert set(backbones) <= set(available_models()) and backbones[-1] == "efficientnetv2_s"


@pytest.mark.parametrize("preset", ["quick", "paper"])
def test_every_cell_of_the_tables_grid_makes_a_buildable_config(preset):
    # Only the builders' options are checked: building B7 (or training it) is not a unit test.
    from pump_keras.config import load_config
    from pump_keras.training.setup import model_options

    for table in GRIDS["tables"]:
        for name, overrides in cells(TABLES[table]):
            config = load_config(preset, None, overrides)
            options = model_options(config.model, config.features.input_shape)
            assert options["input_shape"] == config.features.input_shape, (table, name)
    # The preset's scaling belongs to the paper's network; B7 gets its own defaults.
    config = load_config("quick", None, ["model.name=efficientnet_b7"])
    assert model_options(config.model, (128, 32, 3)) == {"input_shape": (128, 32, 3)}
    assert config.features.image_shape == (128, 32)
