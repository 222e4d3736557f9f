"""SavedModel export: signatures on real MIMII/DCASE bytes, equality with training images, TF's own CLI, atomicity."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from pump_keras import export
from pump_keras.config import DataConfig, FeatureConfig
from pump_keras.data.index import index_dataset
from pump_keras.data.pipeline import make_dataset
from pump_keras.models import load_model
from tests.conftest import DCASE_DIR, MIMII_DIR, real_wav_files
from tests.test_predict import EXPORT_THRESHOLD, tiny_model_files

FEATURES = FeatureConfig(image_size=64)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The tiny exported model shared by the export and predict tests (its logits spread wide, so score comparisons bite)."""
    files = tiny_model_files(tmp_path_factory)
    return load_model(files.keras_file), files.saved_model


def real_records():
    records = index_dataset(str(MIMII_DIR)) + index_dataset(str(DCASE_DIR))
    assert len(records) == len(real_wav_files())
    return records


def test_served_scores_equal_the_model_on_training_images_for_every_real_file(exported):
    model, path = exported
    assert path.endswith(os.path.join("m", "1"))
    served = tf.saved_model.load(path)
    records = real_records()
    dataset = make_dataset(records, FEATURES, DataConfig(batch_size=8, cache=False))
    expected = tf.sigmoid(model.predict(dataset.map(lambda images, labels: images), verbose=0)[:, 0]).numpy()
    assert expected.max() - expected.min() > 0.05  # scores spread, so the comparison means something
    contents = tf.constant([open(r.path, "rb").read() for r in records])
    outputs = served.signatures["serving_default"](wav_bytes=contents)
    assert set(outputs) == {"anomaly_score", "is_anomaly", "logit"}
    np.testing.assert_allclose(outputs["anomaly_score"].numpy(), expected, atol=1e-5)
    threshold = EXPORT_THRESHOLD
    np.testing.assert_array_equal(outputs["is_anomaly"].numpy(), outputs["anomaly_score"].numpy() >= threshold)
    metadata = json.load(open(os.path.join(path, "assets.extra", export.METADATA_NAME)))
    assert metadata["features"]["image_size"] == 64 and metadata["threshold"] == EXPORT_THRESHOLD


def test_waveform_and_image_signatures_agree_with_bytes(exported):
    _, path = exported
    served = tf.saved_model.load(path)
    mono = sorted(DCASE_DIR.rglob("*.wav"))[:2]
    contents = tf.constant([open(p, "rb").read() for p in mono])
    by_bytes = served.signatures["serving_default"](wav_bytes=contents)["anomaly_score"].numpy()
    from pump_keras.features import to_backbone_channels, wav_bytes_to_image, wav_bytes_to_waveform

    waveforms = tf.stack([wav_bytes_to_waveform(tf.io.read_file(str(p)), FEATURES) for p in mono])
    by_waveform = served.signatures["serving_waveforms"](
        waveforms=waveforms, sample_rate=tf.constant(16000))["anomaly_score"].numpy()
    images = tf.stack([to_backbone_channels(wav_bytes_to_image(tf.io.read_file(str(p)), FEATURES), FEATURES)
                       for p in mono])
    by_image = served.signatures["serving_images"](images=images)["anomaly_score"].numpy()
    np.testing.assert_allclose(by_waveform, by_bytes, atol=1e-6)
    np.testing.assert_allclose(by_image, by_bytes, atol=1e-6)
    with pytest.raises(tf.errors.InvalidArgumentError, match="sample_rate must be 16000 Hz"):
        served.signatures["serving_waveforms"](waveforms=waveforms, sample_rate=tf.constant(8000))


def test_bytes_that_are_not_a_wav_give_a_readable_invalid_argument(exported):
    served = tf.saved_model.load(exported[1])
    with pytest.raises(tf.errors.InvalidArgumentError, match="not a RIFF/WAVE file"):
        served.signatures["serving_default"](wav_bytes=tf.constant([b"ID3 this is an mp3, not a wav"]))


def test_tensorflow_saved_model_cli_shows_and_runs_the_signatures(exported, tmp_path):
    _, path = exported
    show = subprocess.run(["saved_model_cli", "show", "--dir", path, "--all"], capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=300)
    assert show.returncode == 0, show.stderr[-2000:]
    for name in ("serving_default", "serving_waveforms", "serving_images", "wav_bytes", "anomaly_score"):
        assert name in show.stdout
    clip = str(sorted(MIMII_DIR.rglob("*.wav"))[0])
    inputs = tmp_path / "wav.npy"
    np.save(inputs, np.array([open(clip, "rb").read()], dtype=object), allow_pickle=True)
    run = subprocess.run(["saved_model_cli", "run", "--dir", path, "--tag_set", "serve",
                          "--signature_def", "serving_default", "--inputs", f"wav_bytes={inputs}",
                          "--outdir", str(tmp_path / "out")],
                         capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    score = np.load(tmp_path / "out" / "anomaly_score.npy")
    direct = tf.saved_model.load(path).signatures["serving_default"](
        wav_bytes=tf.constant([open(clip, "rb").read()]))["anomaly_score"].numpy()
    np.testing.assert_allclose(score, direct, atol=1e-6)


def test_versions_count_up_and_a_failed_export_leaves_nothing(exported, monkeypatch):
    model, path = exported
    folder = os.path.dirname(path)
    with pytest.raises(FileExistsError, match="choose another version"):
        export.export_saved_model(model, FEATURES, folder, version=1)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    # Fails at the last step, after the whole SavedModel was written.
    monkeypatch.setattr(export.os, "rename", broken)
    with pytest.raises(OSError, match="disk full"):
        export.export_saved_model(model, FEATURES, folder)
    monkeypatch.undo()
    assert sorted(os.listdir(folder)) == ["1"]
    assert export.next_version(folder) == 2


def test_export_cli_takes_the_threshold_chosen_on_validation(exported, tmp_path, capsys):
    from pump_keras.config import RunConfig, replace
    from pump_keras.config_io import config_to_json

    model, _ = exported
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    config = replace(RunConfig(), features=FEATURES, run_dir=str(run_dir))
    (run_dir / "config.json").write_text(config_to_json(config))
    model.save(run_dir / "best.keras")
    (run_dir / "threshold.json").write_text(json.dumps({"threshold_probability": 0.73}))
    out = tmp_path / "models" / "pump"
    assert export.main(["--run-dir", str(run_dir), "--out", str(out), "--version", "4"]) == 0, \
        capsys.readouterr().err[-3000:]
    assert capsys.readouterr().out.strip() == str(out / "4")
    metadata = json.load(open(out / "4" / "assets.extra" / export.METADATA_NAME))
    assert metadata["threshold"] == 0.73 and metadata["threshold_source"].startswith("threshold.json")
    missing = subprocess.run([sys.executable, "-m", "pump_keras.export", "--run-dir", str(tmp_path / "none"),
                              "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "not a pump_keras run directory" in missing.stderr  # the real CLI
