"""SavedModel export: signatures on real MIMII/DCASE bytes, equality with training images, TF's own CLI, atomicity."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import pump_keras
from pump_keras.audio.wavfile import read_wav_header, write_wav
from pump_keras.cli import export as export_cli, train
from pump_keras.config import DataConfig, FeatureConfig
from pump_keras.data.index import ClipRecord, index_dataset
from pump_keras.data.pipeline import make_dataset
from pump_keras.data.split import write_manifest
from pump_keras.deploy import export, serving_warmup
from pump_keras.models import load_model
from tests.conftest import DCASE_DIR, MIMII_DIR, real_wav_files
from tests.deploy.test_predict import EXPORT_THRESHOLD, strict_json, tiny_model_files

pytestmark = pytest.mark.slow  # trains models or runs commands end to end

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
    from pump_keras.audio.features import to_backbone_channels, wav_bytes_to_image, wav_bytes_to_waveform

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
    from pump_keras.config import RunConfig, config_to_json, replace

    model, _ = exported
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    config = replace(RunConfig(), features=FEATURES, run_dir=str(run_dir))
    (run_dir / "config.json").write_text(config_to_json(config))
    model.save(run_dir / "best.keras")
    (run_dir / "threshold.json").write_text(json.dumps({"threshold_probability": 0.73}))
    # Training clips of 2 s (one 2.5 s), and test metrics of which one is undefined (NaN).
    clips = []
    for i, seconds in enumerate((2.0, 2.0, 2.5)):
        clips.append(ClipRecord(path=str(tmp_path / f"normal_id_00_{i:08d}.wav"), label=0, machine="pump",
                                machine_id="00", snr_db=None, clip_key=f"00/{i}"))
        write_wav(clips[-1].path, np.zeros((int(seconds * 16000), 1), np.int16), 16000)
    write_manifest(run_dir / "split.csv", {"train": clips})
    (run_dir / "metrics.json").write_text(json.dumps({
        "test": {"auc": 0.8, "precision": float("nan")},
        "baseline": {"name": "logistic_regression", "test": {"auc": 0.7, "pauc": 0.6}},
        "verdict": {"text": "too few clips to tell"}}))
    out = tmp_path / "models" / "pump"
    assert export_cli.main(["--run-dir", str(run_dir), "--out", str(out), "--version", "4"]) == 0, \
        capsys.readouterr().err[-3000:]
    captured = capsys.readouterr()
    assert captured.out.strip() == str(out / "4")
    for step in ("Loading", "traced serving_default", "traced serving_images", "wrote the SavedModel",
                 "warm-up request (2 s clip)", f"Exported {out / '4'}"):
        assert step in captured.err, step  # progress while it works
    metadata = strict_json((out / "4" / "assets.extra" / export.METADATA_NAME).read_text())
    assert metadata["threshold"] == 0.73 and metadata["threshold_source"].startswith("threshold.json")
    assert metadata["clip"] == {"seconds": 2.0, "frames": 32000, "sample_rate": 16000, "length_tolerance": 0.1,
                                "training_files": 3, "shortest_seconds": 2.0, "longest_seconds": 2.5}
    provenance = metadata["provenance"]
    assert provenance["synthetic"] is True and provenance["data_source"] == os.path.join(str(run_dir), "synthetic")
    assert provenance["test_metrics"] == {"auc": 0.8, "precision": None}
    assert provenance["baseline"] == {"name": "logistic_regression", "test": {"auc": 0.7, "pauc": 0.6}}
    assert provenance["verdict"] == "too few clips to tell"
    assert provenance["package_version"] == pump_keras.__version__
    assert provenance["commit"] is None or len(provenance["commit"]) == 40
    missing = subprocess.run([sys.executable, "-m", "pump_keras.export", "--run-dir", str(tmp_path / "none"),
                              "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "not a pump_keras run directory" in missing.stderr  # the real CLI


def test_images_signature_checks_shape_and_range(exported):
    served_images = tf.saved_model.load(exported[1]).signatures["serving_images"]
    ok = served_images(images=tf.fill([2, 64, 64, 3], 0.5))["anomaly_score"].numpy()
    assert ok.shape == (2,) and np.isfinite(ok).all()
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"images: shape \[1 32 32 3\], but the model "
                                                                r"takes \[batch, 64, 64, 3\]"):
        served_images(images=tf.zeros([1, 32, 32, 3]))
    for bad in (1.5, -0.25, float("nan")):
        values = np.full([1, 64, 64, 3], 0.5, np.float32)
        values[0, 3, 4, 1] = bad
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"must be finite and lie in \[0, 1\]"):
            served_images(images=tf.constant(values))


def read_fields(message: bytes) -> dict:
    """Protobuf wire format of length-delimited fields: {field number: [payloads]}."""
    def varint(position):
        value, shift = 0, 0
        while True:
            byte = message[position]
            value |= (byte & 0x7F) << shift
            position, shift = position + 1, shift + 7
            if not byte & 0x80:
                return value, position
    fields, position = {}, 0
    while position < len(message):
        key, position = varint(position)
        assert key & 7 == 2, f"field {key >> 3} has wire type {key & 7}, not length-delimited"
        size, position = varint(position)
        fields.setdefault(key >> 3, []).append(message[position:position + size])
        position += size
    return fields


def test_the_warmup_file_is_one_predict_request_of_a_training_length_clip(exported):
    from tensorflow.core.framework import tensor_pb2

    path = os.path.join(exported[1], "assets.extra", serving_warmup.WARMUP_FILE)
    records = [record.numpy() for record in tf.data.TFRecordDataset(path)]
    assert len(records) == 1
    prediction_log = read_fields(records[0])
    assert list(prediction_log) == [6]  # predict_log
    predict_log = read_fields(prediction_log[6][0])
    assert list(predict_log) == [1]  # request
    request = read_fields(predict_log[1][0])
    model_spec = read_fields(request[1][0])
    assert model_spec == {1: [b"m"], 3: [b"serving_default"]}  # name (the model folder), signature_name
    (entry,) = request[2]  # inputs: one map entry
    entry = read_fields(entry)
    assert entry[1] == [b"wav_bytes"]
    tensor = tf.make_ndarray(tensor_pb2.TensorProto.FromString(entry[2][0]))
    assert tensor.shape == (1,)
    wav = tensor[0]
    header_file = os.path.join(os.path.dirname(path), "warmup.wav")
    with open(header_file, "wb") as handle:
        handle.write(wav)
    header = read_wav_header(header_file)
    os.remove(header_file)
    assert (header.frames, header.sample_rate) == (160000, 16000)  # the recorded training clip
    served = tf.saved_model.load(exported[1]).signatures["serving_default"]
    assert np.isfinite(served(wav_bytes=tf.constant([wav]))["anomaly_score"].numpy()).all()


def test_the_export_reports_its_progress(exported, tmp_path_factory):
    lines = tiny_model_files(tmp_path_factory).export_log
    assert lines[0].startswith("Exporting ") and lines[-1].startswith("Exported ")
    for name in ("serving_default", "serving_waveforms", "serving_images"):
        assert any(line.strip().startswith(f"traced {name} (") for line in lines), name


def record_version(model_dir, version, synthetic):
    extra = model_dir / str(version) / "assets.extra"
    extra.mkdir(parents=True)
    (extra / export.METADATA_NAME).write_text(json.dumps({"provenance": {"synthetic": synthetic}}))


def test_a_synthetic_model_never_joins_real_ones(tmp_path):
    real, demo = tmp_path / "real", tmp_path / "demo"
    record_version(real, 1, synthetic=False)
    record_version(demo, 1, synthetic=True)
    with pytest.raises(export.ExportError, match=r"version\(s\) 1 trained on real data.*export.name=real_synthetic"):
        export.check_export_target(str(real), None, synthetic=True)
    export.check_export_target(str(real), None, synthetic=False)  # a real model may follow a real one
    export.check_export_target(str(demo), None, synthetic=True)
    export.check_export_target(str(demo), None, synthetic=False)  # and replace a demonstration
    (real / "2").mkdir()  # a version without a record of its data counts as real
    record_version(demo, 3, synthetic=False)
    with pytest.raises(export.ExportError, match=r"version\(s\) 3 trained"):
        export.check_export_target(str(demo), None, synthetic=True)
    with pytest.raises(FileExistsError, match="choose another version"):
        export.check_export_target(str(real), 2, synthetic=False)


def test_train_refuses_an_impossible_export_before_training(tmp_path, capsys):
    models = tmp_path / "saved_models"
    record_version(models / "pump_anomaly", 1, synthetic=False)
    run_dir = tmp_path / "run"
    common = ["--run-dir", str(run_dir), "--set", f"export.out_dir={json.dumps(str(models))}", "--epochs", "1"]
    assert train.main([*common, "--set", "export.version=1"]) == 2
    assert "pump_anomaly/1 exists; choose another version (next free: 2)" in capsys.readouterr().err
    assert train.main(common) == 2  # synthetic recordings, a real model in the folder
    assert "would become the version TF Serving serves" in capsys.readouterr().err
    assert not run_dir.exists()  # refused before anything was made
