"""Serving latency: the exported `serving_default` (WAV bytes in) against the bare model forward.

For the `paper` model (224 px improved-CBAM EfficientNetV2-S; untrained
weights: speed does not depend on them), exported with
`pump_keras.deploy.export.export_saved_model` and loaded back with
`tf.saved_model.load`, as TF Serving would:

* end to end: `serving_default` on a ten-second 8-channel MIMII clip
  (WAVE_FORMAT_EXTENSIBLE, read from `../shared/data` when present, else a
  synthetic one of the same format), batch 1 latency p50/p95, and batch 32
  throughput;
* bare: the same SavedModel's `serving_images` on the ready image of that
  clip, the same statistics.

The two alternate call by call. Last line: `latency_ratio=X.XX` (end-to-end
p50 over bare p50 at batch 1). Target: at most 1.3.

    python benchmarks/serving.py [--calls 30] [--batch 32] [--throughput-calls 3]
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from pump_keras.audio.features import to_backbone_channels, wav_bytes_to_image  # noqa: E402
from pump_keras.config import preset  # noqa: E402
from pump_keras.deploy.export import export_saved_model  # noqa: E402
from pump_keras.training.setup import build_model  # noqa: E402


def mimii_clip(workdir: str) -> str:
    """A real ten-second 8-channel MIMII clip, or a synthetic one of the same format."""
    shared = sorted(glob.glob(os.path.join(os.path.dirname(REPO), "shared", "data", "mimii-pump-0dB", "**", "*.wav"),
                          recursive=True))
    if shared:
        return shared[0]
    from pump_keras.config import SyntheticConfig
    from pump_keras.data.synthetic import generate_dataset

    return generate_dataset(workdir, SyntheticConfig(clips_per_class=1, seconds=10.0, machine_ids=("00",)))[0]


def percentile(values, q):
    return float(np.percentile(np.asarray(values) * 1e3, q))


def alternating_seconds(calls: dict, rounds: int) -> dict:
    """Seconds of each signature call, name by name within each round (noise hits both alike)."""
    seconds = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            call()["anomaly_score"].numpy()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=30, help="timed batch-1 calls per path")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--throughput-calls", type=int, default=3)
    args = parser.parse_args(argv)

    config = preset("paper")
    with tempfile.TemporaryDirectory() as workdir:
        clip = mimii_clip(workdir)
        path = export_saved_model(build_model(config), config.features, os.path.join(workdir, "model"))
        served = tf.saved_model.load(path)
        by_bytes, by_image = served.signatures["serving_default"], served.signatures["serving_images"]
        contents = open(clip, "rb").read()
        image = to_backbone_channels(wav_bytes_to_image(tf.constant(contents), config.features), config.features)
        one_wav, one_image = tf.constant([contents]), tf.expand_dims(image, 0)
        many_wav = tf.constant([contents] * args.batch)
        many_image = tf.repeat(one_image, args.batch, axis=0)
        for _ in range(3):  # warm up both paths
            by_bytes(wav_bytes=one_wav)
            by_image(images=one_image)
        latency = alternating_seconds({"end_to_end": lambda: by_bytes(wav_bytes=one_wav),
                                       "bare": lambda: by_image(images=one_image)}, args.calls)
        throughput = {name: [args.batch / s for s in seconds] for name, seconds in alternating_seconds(
            {"end_to_end": lambda: by_bytes(wav_bytes=many_wav),
             "bare": lambda: by_image(images=many_image)}, args.throughput_calls).items()}

    print(f"clip {os.path.basename(clip)} ({len(contents) / 1e6:.1f} MB), model 224 px paper preset, "
          f"{os.cpu_count()} CPU cores, {args.calls} alternating batch-1 calls, batch {args.batch} throughput")
    print(f"{'':12s}{'p50 ms':>10s}{'p95 ms':>10s}{'clips/s @' + str(args.batch):>16s}")
    for name in latency:
        print(f"{name:12s}{percentile(latency[name], 50):>10.1f}{percentile(latency[name], 95):>10.1f}"
              f"{statistics.median(throughput[name]):>16.1f}")
    print(f"latency_ratio={percentile(latency['end_to_end'], 50) / percentile(latency['bare'], 50):.2f}")


if __name__ == "__main__":
    main()
