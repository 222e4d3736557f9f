"""`python -m pump_keras.predict`: SavedModel and .keras scores agree, bad files are named, outputs parse."""

import csv
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import keras
import numpy as np
import pytest
import tensorflow as tf

from pump_keras.audio.wavfile import write_wav
from pump_keras.cli import predict as predict_cli
from pump_keras.config import EfficientNetV2Options, FeatureConfig, ModelConfig, RunConfig, config_to_json
from pump_keras.deploy import predict
from pump_keras.deploy.export import export_saved_model
from pump_keras.deploy.serving_client import collect_wav_files
from pump_keras.training.setup import build_model
from tests.conftest import REPO_ROOT, fails_instead_of_hanging, real_wav_files

pytestmark = pytest.mark.slow  # trains models or runs commands end to end

EXPORT_THRESHOLD = 0.5
RUN_THRESHOLD = 0.5
# A random head (scaled by its fan_in) leaves every score within 1e-4 of 0.5,
# where a 1e-5 match proves little; a larger head spreads the scores (by
# about 0.2 here) so that a mismatch shows.
HEAD_SCALE = 20000.0

# The real clips are 10 s at 16 kHz; the tiny model is recorded as trained on such synthetic clips.
EXPORT_METADATA = {"clip": {"seconds": 10.0, "frames": 160000, "sample_rate": 16000, "length_tolerance": 0.1},
                   "provenance": {"synthetic": True}}

_TINY_MODEL = {}


def tiny_model_files(tmp_path_factory) -> SimpleNamespace:
    """A tiny random model as a SavedModel and as a .keras file in a run folder.

    Made once per test session (the export takes half a minute on two
    cores) and shared with test_serving_client.py.
    """
    if "files" not in _TINY_MODEL:
        root = tmp_path_factory.mktemp("tiny_model")
        features = FeatureConfig(image_size=64)
        config = RunConfig(run_dir=str(root / "run"), features=features,
                           model=ModelConfig(efficientnetv2_s=EfficientNetV2Options(width_multiplier=0.25,
                                                                                    depth_multiplier=0.25)))
        keras.utils.set_random_seed(0)
        model = build_model(config)
        head = model.get_layer("logit")
        kernel, bias = head.get_weights()
        head.set_weights([kernel * HEAD_SCALE, bias])
        log = []
        saved_model = export_saved_model(model, features, str(root / "m"), version=1,
                                         threshold=EXPORT_THRESHOLD, metadata=EXPORT_METADATA,
                                         log=log.append)
        run_dir = root / "run"
        run_dir.mkdir()
        model.save(run_dir / "best.keras")
        (run_dir / "config.json").write_text(config_to_json(config))
        (run_dir / "threshold.json").write_text(json.dumps({"threshold_probability": RUN_THRESHOLD}))
        _TINY_MODEL["files"] = SimpleNamespace(saved_model=saved_model, model_dir=str(root / "m"),
                                               keras_file=str(run_dir / "best.keras"),
                                               run_dir=str(run_dir), export_log=log)
    return _TINY_MODEL["files"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model_files(tmp_path_factory)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """The real clips plus one file of random bytes named bad.wav."""
    folder = tmp_path_factory.mktemp("clips")
    bad = folder / "bad.wav"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    return [str(path) for path in real_wav_files()] + [str(bad)]


@pytest.fixture(scope="module")
def scored(model, clips):
    """Every clip scored through the SavedModel and through the .keras file."""
    return {
        "saved_model": predict.predict_files(model.saved_model, clips, batch_size=8),
        "keras": predict.predict_files(model.keras_file, clips, run_dir=model.run_dir, batch_size=8),
    }


def by_path(results):
    return {result["path"]: result for result in results}


def test_saved_model_and_keras_file_give_the_same_scores(scored, clips):
    real, bad = clips[:-1], clips[-1]
    for results in scored.values():
        assert [r["path"] for r in results] == clips
        assert all(r["error"] is None for r in results[:-1])
    saved, keras_file = scored["saved_model"], scored["keras"]
    scores = np.array([r["anomaly_score"] for r in saved[:-1]])
    assert scores.max() - scores.min() > 0.05, "scores too alike for the comparison to mean anything"
    np.testing.assert_allclose([r["anomaly_score"] for r in keras_file[:-1]], scores, rtol=0, atol=1e-5)
    np.testing.assert_allclose([r["logit"] for r in keras_file[:-1]],
                               [r["logit"] for r in saved[:-1]], rtol=1e-4, atol=1e-4)
    for results, threshold in ((saved, EXPORT_THRESHOLD), (keras_file, RUN_THRESHOLD)):
        assert [r["is_anomaly"] for r in results[:-1]] == [s >= threshold for s in
                                                           (r["anomaly_score"] for r in results[:-1])]
    assert len(real) == len(saved) - 1
    for results in scored.values():
        failure = by_path(results)[bad]
        assert failure["anomaly_score"] is None and failure["is_anomaly"] is None
        assert "RIFF/WAVE" in failure["error"]
        assert "Graph execution" not in failure["error"] and "node" not in failure["error"]


def test_a_threshold_override_changes_is_anomaly(model, scored, clips):
    real = clips[:4] + clips[-5:-1]
    threshold = float(np.median([by_path(scored["saved_model"])[path]["anomaly_score"] for path in real]))
    for model_path, run_dir in ((model.saved_model, None), (model.keras_file, model.run_dir)):
        results = predict.predict_files(model_path, real, run_dir=run_dir, threshold=threshold)
        flags = [r["is_anomaly"] for r in results]
        assert flags == [r["anomaly_score"] >= threshold for r in results]
        assert any(flags) and not all(flags)
    scorer = predict.load_scorer(model.keras_file, run_dir=model.run_dir)
    assert scorer.threshold == RUN_THRESHOLD and scorer.threshold_source.startswith("threshold.json")
    assert predict.load_scorer(model.model_dir).model_path == model.saved_model  # latest version


def test_cli_lists_every_file_in_json_and_csv_and_fails_on_a_bad_file(model, scored, clips, tmp_path, capsys):
    expected = by_path(scored["saved_model"])
    out_json = tmp_path / "out" / "results.json"
    status = predict_cli.main(["--model", model.saved_model, "--out", str(out_json), "--batch-size", "16", *clips])
    assert status == 1
    captured = capsys.readouterr()
    bad_line = next(line for line in captured.out.splitlines() if line.startswith(clips[-1]))
    assert "RIFF/WAVE" in bad_line
    assert f"{len(clips)} files:" in captured.out and "1 failed" in captured.out
    assert f"{len(clips)}/{len(clips)} files" in captured.err  # the progress line
    document = json.loads(out_json.read_text())
    assert document["threshold"] == EXPORT_THRESHOLD
    assert [r["path"] for r in document["results"]] == clips
    for result in document["results"]:
        assert result["anomaly_score"] == pytest.approx(expected[result["path"]]["anomaly_score"], abs=1e-6)
    assert document["results"][-1]["anomaly_score"] is None and "RIFF/WAVE" in document["results"][-1]["error"]
    assert list(tmp_path.joinpath("out").iterdir()) == [out_json]  # no temporary file left behind

    out_csv = tmp_path / "results.csv"
    status = predict_cli.main(["--model", model.keras_file, "--run-dir", model.run_dir, "--out", str(out_csv), *clips])
    assert status == 1
    with open(out_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["path"] for row in rows] == clips
    for row in rows[:-1]:
        assert float(row["anomaly_score"]) == pytest.approx(expected[row["path"]]["anomaly_score"], abs=1e-5)
        assert row["is_anomaly"] in ("true", "false") and not row["error"]
    assert rows[-1]["anomaly_score"] == "" and rows[-1]["is_anomaly"] == "" and "RIFF/WAVE" in rows[-1]["error"]


def test_directories_are_searched_recursively_and_each_failure_has_its_reason(model, tmp_path, capsys):
    real = real_wav_files()[0]
    nested = tmp_path / "plant" / "line_1" / "pump_a"
    nested.mkdir(parents=True)
    (nested / "clip.wav").write_bytes(real.read_bytes())
    (tmp_path / "plant" / "upper.WAV").write_bytes(real.read_bytes())
    (tmp_path / "plant" / "notes.txt").write_text("not audio")
    write_wav(str(tmp_path / "plant" / "line_1" / "slow.wav"), np.zeros((8000, 1), np.int16), 8000)
    missing = str(tmp_path / "missing.wav")
    status = predict_cli.main(["--model", model.saved_model, str(tmp_path / "plant"), missing])
    assert status == 1
    results = predict.predict_files(model.saved_model, [tmp_path / "plant", missing])
    found = {r["path"][len(str(tmp_path)) + 1:]: r for r in results}
    assert sorted(found) == ["missing.wav", "plant/line_1/pump_a/clip.wav", "plant/line_1/slow.wav",
                             "plant/upper.WAV"]
    assert found["plant/line_1/pump_a/clip.wav"]["error"] is None
    assert found["plant/upper.WAV"]["anomaly_score"] == found["plant/line_1/pump_a/clip.wav"]["anomaly_score"]
    assert "sample rate 8000 Hz" in found["plant/line_1/slow.wav"]["error"]
    assert "No such file" in found["missing.wav"]["error"]
    assert "sample rate 8000 Hz" in capsys.readouterr().out


def test_usage_errors_exit_with_status_2(model, clips, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert predict_cli.main(["--model", model.saved_model, str(empty)]) == 2
    assert "no .wav files" in capsys.readouterr().err
    assert predict_cli.main(["--model", str(tmp_path / "nothing"), clips[0]]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert predict_cli.main(["--model", model.saved_model, "--out", str(tmp_path / "r.txt"), clips[0]]) == 2
    assert predict_cli.main(["--model", model.saved_model, "--run-dir", model.run_dir, clips[0]]) == 2
    lonely = tmp_path / "lonely.keras"
    lonely.write_bytes(open(model.keras_file, "rb").read())
    assert predict_cli.main(["--model", str(lonely), clips[0]]) == 2
    assert "--run-dir" in capsys.readouterr().err
    assert predict_cli.main(["--model", model.saved_model, "--threshold", "1.5", clips[0]]) == 2
    # The module runs as a program too.
    process = subprocess.run([sys.executable, "-m", "pump_keras.predict", "--model", model.saved_model,
                              str(empty)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert process.returncode == 2 and "no .wav files" in process.stderr


def test_decoder_message_keeps_the_reason_only():
    import tensorflow as tf

    error = tf.errors.InvalidArgumentError(None, None, (
        "Graph execution error:\n\nDetected at node map/Assert defined at (most recent call last):\n"
        "<stack traces unavailable>\nassertion failed: [WAV bytes: not a RIFF/WAVE file (the first 12 "
        "bytes lack \\'RIFF\\' and \\'WAVE\\')]\n\t [[{{node map/Assert}}]] [Op:__inference_1]"))
    assert predict.decoder_message(error) == (
        "not a RIFF/WAVE file (the first 12 bytes lack 'RIFF' and 'WAVE')")


def test_a_named_pipe_is_listed_as_failed_without_being_opened(tmp_path):
    folder = tmp_path / "recordings"
    folder.mkdir()
    (folder / "clip.wav").write_bytes(b"RIFF")
    os.mkfifo(folder / "pipe.wav")
    seen = []

    def score_batch(wav_bytes):
        seen.extend(wav_bytes.numpy().tolist())
        count = len(seen)
        return {"anomaly_score": np.full([count], 0.25), "is_anomaly": np.zeros([count], bool),
                "logit": np.zeros([count])}

    scorer = predict.Scorer(model_path="fake", score_batch=lambda batch: {
        name: tf.constant(value) for name, value in score_batch(batch).items()},
        threshold=0.5, threshold_source="test", features=None)
    with fails_instead_of_hanging(10):
        results = predict.score_wav_files(scorer, collect_wav_files([folder]))
    assert [os.path.basename(r["path"]) for r in results] == ["clip.wav", "pipe.wav"]
    assert results[0]["error"] is None and seen == [b"RIFF"]
    assert results[1]["anomaly_score"] is None and "named pipe (FIFO)" in results[1]["error"]


def strict_json(text):
    """`json.loads` that refuses NaN and Infinity, as strict JSON parsers do."""
    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")
    return json.loads(text, parse_constant=refuse)


def test_a_float_wav_holding_nan_is_a_failed_file_and_the_json_stays_strict(model, clips, tmp_path, capsys):
    from tests.wav_bytes import make_wav

    samples = np.random.default_rng(1).uniform(-0.1, 0.1, 16000).astype(np.float32)
    samples[100:200] = np.nan
    nan_wav = tmp_path / "nan.wav"
    nan_wav.write_bytes(make_wav(samples, format_tag=3, bits=32))
    good = clips[0]
    out = tmp_path / "scores.json"
    status = predict_cli.main(["--model", model.saved_model, "--out", str(out), good, str(nan_wav)])
    captured = capsys.readouterr()
    assert status == 1
    assert "2 files: " in captured.out and "1 failed" in captured.out
    nan_line = next(line for line in captured.out.splitlines() if line.startswith(str(nan_wav)))
    assert "nan" not in nan_line.split()[1:2]  # no score column value of nan
    document = strict_json(out.read_text())
    rows = by_path(document["results"])
    assert rows[good]["error"] is None and 0.0 <= rows[good]["anomaly_score"] <= 1.0
    failed = rows[str(nan_wav)]
    assert failed["anomaly_score"] is None and failed["is_anomaly"] is None and failed["logit"] is None
    assert failed["error"]


def test_predict_warns_about_a_synthetic_model_and_a_clip_unlike_the_training_length(model, clips, tmp_path, capsys):
    short = tmp_path / "short.wav"
    write_wav(str(short), np.zeros((16000, 1), np.int16), 16000)  # 1 s against 10 s training clips
    assert predict_cli.main(["--model", model.saved_model, clips[0], str(short)]) == 0
    err = capsys.readouterr().err
    assert "trained on SYNTHETIC pump recordings" in err
    warnings = [line for line in err.splitlines() if "s long, but the model was trained on" in line]
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: {short} is 1 s long")
    assert "10 s clips (tolerance 10%)" in warnings[0] and "not supported yet" in warnings[0]


def test_the_clip_length_tolerance_is_the_recorded_fraction_of_the_training_length(tmp_path):
    from pump_keras.config import ExportConfig
    from pump_keras.deploy.model_info import clip_length_warning

    info = {"clip": {"seconds": 2.0, "frames": 32000, "sample_rate": 16000, "length_tolerance": 0.25}}
    lengths = {"inside_short": 1.5, "inside_long": 2.5, "outside_short": 1.49, "outside_long": 2.51}
    warned = {}
    for name, seconds in lengths.items():
        path = str(tmp_path / f"{name}.wav")
        write_wav(path, np.zeros((int(round(seconds * 16000)), 1), np.int16), 16000)
        warned[name] = clip_length_warning(path, info) is not None
    assert warned == {"inside_short": False, "inside_long": False, "outside_short": True, "outside_long": True}
    assert clip_length_warning(path, {}) is None  # an export without a recorded length: nothing to compare
    assert ExportConfig().clip_length_tolerance == 0.1
    with pytest.raises(ValueError, match="clip_length_tolerance must be >= 0"):
        ExportConfig(clip_length_tolerance=-0.1)
