"""The tf.data pipeline and the index -> split -> manifest -> dataset path."""

import glob
import os

import numpy as np
import pytest
import tensorflow as tf

from pump_keras.audio.wavfile import write_wav
from pump_keras.config import DataConfig, FeatureConfig
from pump_keras.data.index import ClipRecord, DatasetError, index_dataset
from pump_keras.data.pipeline import cache_path_for, load_image, make_dataset
from pump_keras.data.prepare import make_split_datasets, prepare_splits
from pump_keras.data.split import SplitError, read_manifest
from pump_keras.errors import WavFormatError
from pump_keras.run_dir import RunDirectory
from tests.conftest import DCASE_DIR, MIMII_DIR

SMALL = FeatureConfig(image_size=32)


def real_records():
    return index_dataset(MIMII_DIR) + index_dataset(DCASE_DIR)


def test_images_and_labels_from_real_clips_in_order():
    records = real_records()
    dataset = make_dataset(records, SMALL, DataConfig(batch_size=5, cache=False))
    images, labels = [], []
    for batch_images, batch_labels in dataset:
        images.append(batch_images.numpy())
        labels.append(batch_labels.numpy())
    images, labels = np.concatenate(images), np.concatenate(labels)
    assert images.shape == (len(records), 32, 32, 3) and images.dtype == np.float32
    np.testing.assert_array_equal(labels, [r.label for r in records])
    for i in (0, 5, len(records) - 1):  # same image as the single-file stage
        single = load_image(tf.constant(records[i].path), SMALL).numpy()
        np.testing.assert_array_equal(images[i], np.repeat(single, 3, axis=-1))


def _write_clips(folder, count, rate=16000, seconds=0.25, snr_dir="0_dB_pump", start_seed=0):
    rng = np.random.default_rng(start_seed)
    for i in range(count):
        label = "abnormal" if i % 2 else "normal"
        mid = f"id_0{2 * (i % 4 // 2)}"
        path = os.path.join(folder, snr_dir, "pump", mid, label, f"{i:08d}.wav")
        samples = (rng.standard_normal((int(rate * seconds), 2)) * (2000 + 3000 * (i % 2)))
        write_wav(path, samples.astype(np.int16), rate)


def test_cache_is_written_reused_and_keyed_by_feature_config(tmp_path):
    _write_clips(tmp_path / "data", 8)
    records = index_dataset(tmp_path / "data")
    cache = tmp_path / "cache"
    config = DataConfig(batch_size=4, cache=True)
    dataset = make_dataset(records, SMALL, config, cache_dir=str(cache), name="val")
    first = np.concatenate([x.numpy() for x, _ in dataset])
    files = sorted(os.listdir(cache))
    assert any(f.endswith(".index") for f in files)
    second = np.concatenate([x.numpy() for x, _ in dataset])  # served from the cache
    np.testing.assert_array_equal(first, second)

    prefix = cache_path_for(str(cache), "val", [r.path for r in records], SMALL)
    other = cache_path_for(str(cache), "val", [r.path for r in records], FeatureConfig(image_size=16))
    assert prefix != other
    assert any(f.startswith(os.path.basename(prefix)) for f in files)
    # a stale lockfile from a killed writer does not block the next run
    for f in glob.glob(str(cache / "*")):
        os.remove(f)
    open(prefix + "_0.lockfile", "w").close()
    again = make_dataset(records, SMALL, config, cache_dir=str(cache), name="val")
    np.testing.assert_array_equal(np.concatenate([x.numpy() for x, _ in again]), first)


@pytest.mark.parametrize("cache", [False, True])
def test_training_shuffle_is_seeded_and_changes_every_epoch(tmp_path, cache):
    _write_clips(tmp_path / "data", 12)
    records = index_dataset(tmp_path / "data")

    def epochs(seed):
        config = DataConfig(batch_size=12, cache=cache, shuffle_seed=seed)
        dataset = make_dataset(records, SMALL, config, training=True,
                               cache_dir=str(tmp_path / f"cache{seed}"))
        return [x.numpy()[:, :, :, 0].mean(axis=(1, 2)) for x, _ in dataset.repeat(2)]

    a, b = epochs(1), epochs(1)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], a[1])  # reshuffled each epoch
    assert sorted(a[0]) == pytest.approx(sorted(a[1]))  # same images


def test_cached_training_batches_are_a_full_shuffle(tmp_path):
    # A bounded shuffle buffer (512 images) over a cache written in path order
    # keeps each clip near its path position: neighbouring folders (one id,
    # one class, one SNR) then fill whole batches. The order must be a full
    # permutation: uncorrelated with the path order. Labels carry the index.
    rng = np.random.default_rng(0)
    records = []
    for i in range(1500):
        path = str(tmp_path / "data" / f"{i:04d}.wav")
        write_wav(path, (rng.standard_normal(320) * 1000).astype(np.int16), 16000)
        records.append(ClipRecord(path=path, label=i, machine="pump", machine_id="00",
                                  snr_db=None, clip_key=str(i)))
    features = FeatureConfig(image_size=8, n_fft=64, hop_length=32)
    config = DataConfig(batch_size=100, cache=True, shuffle_seed=3)
    dataset = make_dataset(records, features, config, training=True, cache_dir=str(tmp_path / "cache"))
    orders = [np.concatenate([labels.numpy() for _, labels in dataset]) for _ in range(2)]
    for order in orders:
        assert sorted(order) == list(range(1500))
        correlation = np.corrcoef(order, np.arange(1500))[0, 1]
        assert abs(correlation) < 0.15, correlation
        assert abs(np.mean(order[:150]) - 749.5) < 150  # the first tenth comes from everywhere
    assert not np.array_equal(*orders)


def test_a_bad_file_is_named_before_training(tmp_path):
    _write_clips(tmp_path / "data", 4)
    records = index_dataset(tmp_path / "data")
    bad = records[2].path
    with open(bad, "r+b") as f:
        f.truncate(200)
    with pytest.raises(WavFormatError, match="truncated file") as info:
        make_dataset(records, SMALL, DataConfig(batch_size=2, cache=False))
    assert bad in str(info.value)


def test_a_file_changed_after_indexing_fails_with_its_path(tmp_path):
    _write_clips(tmp_path / "data", 4)
    records = index_dataset(tmp_path / "data")
    dataset = make_dataset(records, SMALL, DataConfig(batch_size=2, cache=False))
    bad = records[3].path
    with open(bad, "r+b") as f:
        f.truncate(200)
    with pytest.raises(tf.errors.InvalidArgumentError, match="changed on disk") as info:
        for _ in dataset:
            pass
    assert bad in info.value.message


def test_wrong_rate_or_channel_is_named_before_training(tmp_path):
    _write_clips(tmp_path / "data", 2, rate=8000)
    records = index_dataset(tmp_path / "data")
    with pytest.raises(ValueError, match="sample rate 8000 Hz") as info:
        make_dataset(records, SMALL, DataConfig(cache=False))
    assert records[0].path in str(info.value)
    with pytest.raises(ValueError, match="channel 5 requested"):
        make_dataset(records, FeatureConfig(sample_rate=8000, channel=5), DataConfig(cache=False))


def test_mixed_encodings_in_one_dataset(tmp_path):
    from tests.wav_bytes import make_wav

    rng = np.random.default_rng(3)
    samples = (rng.standard_normal((4000, 2)) * 3000).astype(np.int64)
    folder = tmp_path / "0_dB_pump" / "pump" / "id_00" / "normal"
    folder.mkdir(parents=True)
    kinds = {"00000000.wav": dict(bits=16), "00000001.wav": dict(bits=24),
             "00000002.wav": dict(format_tag=3, bits=32), "00000003.wav": dict(bits=16, layout="extensible")}
    for name, options in kinds.items():
        values = samples / 32768 if options.get("format_tag") == 3 else samples * (256 if options["bits"] == 24 else 1)
        (folder / name).write_bytes(make_wav(values, **options))
    records = index_dataset(tmp_path)
    dataset = make_dataset(records, SMALL, DataConfig(batch_size=4, cache=False))
    images = next(iter(dataset))[0].numpy()
    for i, record in enumerate(records):  # identical to the in-graph-header path
        np.testing.assert_array_equal(images[i, ..., 0], load_image(tf.constant(record.path), SMALL).numpy()[..., 0])
    np.testing.assert_allclose(images[0], images[1], atol=1e-6)  # same audio, other encodings


def test_prepare_writes_manifest_and_reads_it_back(tmp_path):
    _write_clips(tmp_path / "data", 40)
    config = DataConfig(data_dir=str(tmp_path / "data"), batch_size=4, cache=False)
    run_dir = str(tmp_path / "run")
    os.makedirs(run_dir)
    splits = prepare_splits(config, SMALL, run_dir)
    assert {len(splits[s]) for s in splits} and sum(len(v) for v in splits.values()) == 40
    assert read_manifest(os.path.join(run_dir, RunDirectory.MANIFEST)) == splits
    # a second call reads the manifest instead of re-splitting
    assert prepare_splits(DataConfig(data_dir="/nonexistent"), SMALL, run_dir) == splits
    datasets = make_split_datasets(splits, config, SMALL, run_dir)
    assert set(datasets) == {"train", "val", "test"}
    count = sum(int(y.shape[0]) for _, y in datasets["val"])
    assert count == len(splits["val"])


def test_prepare_rejects_mixed_sample_rates_naming_a_file(tmp_path):
    _write_clips(tmp_path / "data", 6)
    _write_clips(tmp_path / "data", 2, rate=8000, snr_dir="6_dB_pump", start_seed=9)
    config = DataConfig(data_dir=str(tmp_path / "data"))
    with pytest.raises(DatasetError, match="8000") as info:
        prepare_splits(config, SMALL)
    assert "6_dB_pump" in str(info.value)


def test_prepare_reports_a_split_missing_a_class(tmp_path):
    _write_clips(tmp_path / "data", 4)
    with pytest.raises(SplitError, match="abnormal|normal"):
        prepare_splits(DataConfig(data_dir=str(tmp_path / "data")), SMALL)


def test_directory_without_wavs(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no .wav files"):
        prepare_splits(DataConfig(data_dir=str(tmp_path / "empty")), SMALL)


def test_empty_record_list_is_an_error():
    with pytest.raises(ValueError, match="No records"):
        make_dataset([], SMALL, DataConfig())


def test_missing_file_is_named():
    missing = str(MIMII_DIR / "missing.wav")
    records = [ClipRecord(missing, 0, "pump", "00", 0.0, "k")]
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        make_dataset(records, SMALL, DataConfig(batch_size=1, cache=False))


def test_a_non_finite_file_fails_naming_it_when_read(tmp_path):
    from tests.wav_bytes import make_wav

    folder = tmp_path / "0_dB_pump" / "pump" / "id_00" / "normal"
    folder.mkdir(parents=True)
    samples = np.zeros((4096, 1), np.float32)
    (folder / "00000000.wav").write_bytes(make_wav(samples, format_tag=3, bits=32))
    samples[9] = np.inf
    (folder / "00000001.wav").write_bytes(make_wav(samples, format_tag=3, bits=32))
    records = index_dataset(tmp_path)
    dataset = make_dataset(records, SMALL, DataConfig(batch_size=2, cache=False))
    with pytest.raises(tf.errors.InvalidArgumentError, match="non-finite samples") as info:
        for _ in dataset:
            pass
    assert str(folder / "00000001.wav") in info.value.message


def test_a_clip_shorter_than_one_stft_frame_is_named_before_training(tmp_path):
    _write_clips(tmp_path / "data", 2, seconds=0.05)  # 800 samples
    records = index_dataset(tmp_path / "data")
    with pytest.raises(ValueError, match="clip of 800 samples is shorter than one STFT frame "
                                         r"\(n_fft 1024\)") as info:
        make_dataset(records, SMALL, DataConfig(cache=False))
    assert records[0].path in str(info.value)
    make_dataset(records, FeatureConfig(image_size=32, n_fft=512, hop_length=256), DataConfig(cache=False))
