"""tf.data pipeline against a careful librosa loop, side by side in one run.

Both make the same `spectrogram` images (channel 0, n_fft 1024, hop 512, dB,
fixed window, bilinear resize to 224 x 224, 3 channels) from the same
ten-second 8-channel MIMII-format clips, read from the page cache (every file
is read once before timing). The two are timed in alternating rounds and the
median of each is reported, so machine noise hits both alike.

* first pass: files/s of a fresh (uncached) tf.data pass against the loop;
* cached epochs: images/s of epochs served from the on-disk image cache
  (of at least 2,048 images, the clips listed repeatedly);
* memory: the process's peak resident-memory growth during the tf.data
  passes, beside the size of the WAV files and of the image cache read: it
  stays well below both, since only file names are held.

Last line: `speedup_vs_librosa=X.XX` (first pass). Targets: >= 3 on two
cores; cached epochs >= 2,000 images/s.

    python benchmarks/pipeline.py [--clips-per-class 12] [--rounds 3] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import librosa  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from pump_keras.config import DataConfig, FeatureConfig, SyntheticConfig  # noqa: E402
from pump_keras.data.pipeline import make_dataset  # noqa: E402
from pump_keras.data.synthetic import generate_dataset  # noqa: E402


class _Record:
    def __init__(self, path):
        self.path, self.label = path, 0


def librosa_image(path: str, config: FeatureConfig) -> np.ndarray:
    """The image as a careful user would make it with librosa and PIL."""
    audio, _ = librosa.load(path, sr=None, mono=False)
    waveform = audio[config.channel] if audio.ndim == 2 else audio
    magnitude = np.abs(librosa.stft(waveform, n_fft=config.n_fft, hop_length=config.hop_length))
    db = librosa.amplitude_to_db(magnitude, ref=1.0, amin=1e-5, top_db=None)
    low, high = config.resolved_db_range
    picture = np.clip((db - low) / (high - low), 0.0, 1.0)[::-1].astype(np.float32)
    size = config.image_size
    resized = np.asarray(Image.fromarray(picture).resize((size, size), Image.BILINEAR))
    return np.repeat(resized[..., None], config.image_channels, axis=-1)


def librosa_pass(paths, config) -> float:
    """Files/s of the librosa loop over `paths`."""
    start = time.perf_counter()
    for path in paths:
        librosa_image(path, config)
    return len(paths) / (time.perf_counter() - start)


def dataset_pass(dataset) -> float:
    """Images/s of one full pass over `dataset`."""
    start = time.perf_counter()
    count = 0
    for images, _ in dataset:
        count += int(images.shape[0])
    return count / (time.perf_counter() - start)


class PeakRss:
    """Samples this process's resident memory in a thread; `.peak_mb` after `stop()`."""

    def __init__(self):
        self.peak_mb = self.start_mb = _rss_mb()
        self._running = True
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self):
        while self._running:
            self.peak_mb = max(self.peak_mb, _rss_mb())
            time.sleep(0.01)

    def stop(self):
        self._running = False
        self._thread.join()
        return self.peak_mb - self.start_mb


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", help="existing MIMII-format clips (default: generate)")
    parser.add_argument("--clips-per-class", type=int, default=12,
                        help="per machine id and class when generating (4 ids)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cached-epochs", type=int, default=5)
    args = parser.parse_args(argv)

    feature_config = FeatureConfig(kind="spectrogram", image_size=224)
    with tempfile.TemporaryDirectory() as scratch:
        data_dir = args.data_dir
        if data_dir is None:
            data_dir = os.path.join(scratch, "data")
            generate_dataset(data_dir, SyntheticConfig(
                clips_per_class=args.clips_per_class, seconds=args.seconds))
        paths = sorted(glob.glob(os.path.join(data_dir, "**", "*.wav"), recursive=True))
        wav_mb = sum(os.path.getsize(p) for p in paths) / 2**20
        for path in paths:  # both contenders read from the page cache
            with open(path, "rb") as f:
                f.read()
        records = [_Record(p) for p in paths]
        print(f"{len(paths)} clips, {wav_mb:.0f} MB of WAV, {os.cpu_count()} CPU cores")

        uncached = DataConfig(batch_size=32, cache=False)
        # Warm both: librosa's caches and JIT, TensorFlow's tracing and allocator.
        librosa_pass(paths[:8], feature_config)
        dataset_pass(make_dataset(records, feature_config, uncached))

        librosa_rates, tf_rates, rss_growth = [], [], []
        for round_index in range(args.rounds):
            librosa_rates.append(librosa_pass(paths, feature_config))
            dataset = make_dataset(records, feature_config, uncached)
            monitor = PeakRss()
            tf_rates.append(dataset_pass(dataset))
            rss_growth.append(monitor.stop())
            print(f"round {round_index + 1}: librosa {librosa_rates[-1]:7.1f} files/s   "
                  f"tf.data {tf_rates[-1]:7.1f} files/s")

        # Cached epochs are measured on a training-sized set (the paper's has
        # 1,890 images): the clips listed again until there are 2,048 or more,
        # so per-epoch start-up does not dominate a tiny epoch.
        cached_records = records * -(-2048 // len(records))
        cached = DataConfig(batch_size=32, cache=True)
        dataset = make_dataset(cached_records, feature_config, cached,
                               cache_dir=os.path.join(scratch, "cache"), name="bench")
        monitor = PeakRss()
        fill_rate = dataset_pass(dataset)
        cached_rates = [dataset_pass(dataset) for _ in range(args.cached_epochs)]
        rss_growth.append(monitor.stop())

    librosa_rate = statistics.median(librosa_rates)
    tf_rate = statistics.median(tf_rates)
    cached_rate = statistics.median(cached_rates)
    print(f"first pass:    librosa loop {librosa_rate:.1f} files/s, tf.data {tf_rate:.1f} files/s")
    print(f"cache fill:    {fill_rate:.1f} images/s")
    print(f"cached epochs: {cached_rate:.0f} images/s (median of {args.cached_epochs} epochs "
          f"of {len(cached_records)} images)")
    image_mb = len(cached_records) * feature_config.image_size**2 * 4 / 2**20
    print(f"memory:        peak RSS growth {max(rss_growth[:-1]):.0f} MB over {len(paths)} clips "
          f"({wav_mb:.0f} MB of WAV); {rss_growth[-1]:.0f} MB over {len(cached_records)} cached "
          f"images ({image_mb:.0f} MB in the cache file)")
    print(f"cached_images_per_s={cached_rate:.0f}")
    print(f"speedup_vs_librosa={tf_rate / librosa_rate:.2f}")


if __name__ == "__main__":
    main()
