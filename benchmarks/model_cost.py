"""Cost of the improved-CBAM EfficientNetV2-S against Keras' EfficientNetV2S.

Both models take the same input (224 x 224 x 3) and carry the same one-logit
head. Printed side by side, measured in one run:

* parameters;
* FLOPs of one image's forward pass, counted by TensorFlow's profiler on the
  traced graph (a multiply-add counts as two);
* CPU train-step time (SGD, BCE from logits) and inference time at batch 16,
  the two models alternating step by step so machine noise hits both alike,
  after three warm-up steps each; per-model medians, and the ratios as the
  median of the per-round ratios (each round times both models back to back,
  which cancels the slow drifts of a shared machine).

Both models run under TensorFlow's BFC host allocator, as `pump_keras`
training does (`TrainConfig.cpu_allocator`); `--cpu-allocator default`
measures them under TensorFlow's own, which pages every new full-size buffer
in afresh and costs the improved CBAM, with its extra element-wise tensors,
more than the SE blocks.

Last line: `train_step_time_ratio=X.XX` (ours over Keras'). Targets: at most
1.10, and a FLOPs ratio of at most 1.02.

    python benchmarks/model_cost.py [--image-size 224] [--batch 16] [--steps 10]
        [--cpu-allocator {bfc,default}]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from pump_keras.models import build  # noqa: E402
from pump_keras.models.cost import count_flops  # noqa: E402
from pump_keras.training.cpu_allocator import CPU_ALLOCATORS, select_cpu_allocator  # noqa: E402


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def paired_ratio(ours: list, theirs: list) -> float:
    """Median over rounds of ours / theirs, each round's two times taken back to back."""
    return statistics.median(a / b for a, b in zip(ours, theirs))


def quartiles(ours: list, theirs: list) -> str:
    """The first and third quartiles of the per-round ratios: how far one run can be trusted."""
    ratios = [a / b for a, b in zip(ours, theirs)]
    if len(ratios) < 2:
        return "n/a"
    low, _, high = statistics.quantiles(ratios, n=4)
    return f"{low:.2f}-{high:.2f}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10, help="timed rounds (steps per model and kind)")
    parser.add_argument("--reduction", type=int, default=16)
    parser.add_argument("--cpu-allocator", choices=CPU_ALLOCATORS, default="bfc",
                        help="TensorFlow's host allocator (default: bfc, as pump_keras training)")
    args = parser.parse_args(argv)
    select_cpu_allocator(args.cpu_allocator)  # before the first TensorFlow op

    shape = (args.image_size, args.image_size, 3)
    keras.utils.set_random_seed(0)
    models = {
        "improved_cbam": build("efficientnetv2_s", attention="improved_cbam",
                               reduction=args.reduction, input_shape=shape),
        "keras_v2s": build("efficientnetv2s_keras", input_shape=shape),
    }
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (args.batch,) + shape).astype("float32")
    labels = rng.integers(0, 2, (args.batch, 1)).astype("float32")
    for model in models.values():
        model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                      loss=keras.losses.BinaryCrossentropy(from_logits=True))
        for _ in range(3):  # trace, then let allocations settle
            model.train_on_batch(images, labels)
            model.predict_on_batch(images)

    params = {name: model.count_params() for name, model in models.items()}
    flops = {name: count_flops(model) for name, model in models.items()}
    train = {name: [] for name in models}
    infer = {name: [] for name in models}
    for _ in range(args.steps):
        for name, model in models.items():
            train[name].append(timed(lambda: model.train_on_batch(images, labels)))
            infer[name].append(timed(lambda: model.predict_on_batch(images)))

    for name in models:
        print(f"{name:16s}train s/step by round: {' '.join(f'{t:.2f}' for t in train[name])}")
    print(f"input {shape}, batch {args.batch}, {os.cpu_count()} CPU cores, {args.cpu_allocator} allocator, "
          f"median of {args.steps} alternating steps")
    print(f"{'':16s}{'params':>14s}{'GFLOPs/img':>12s}{'train s/step':>14s}{'infer s/batch':>15s}")
    for name in models:
        print(f"{name:16s}{params[name]:>14,d}{flops[name] / 1e9:>12.3f}"
              f"{statistics.median(train[name]):>14.3f}{statistics.median(infer[name]):>15.3f}")
    ours, theirs = "improved_cbam", "keras_v2s"
    print(f"params_ratio={params[ours] / params[theirs]:.3f}")
    print(f"flops_ratio={flops[ours] / flops[theirs]:.3f}")
    print(f"per-round ratios, quartiles: train {quartiles(train[ours], train[theirs])}, "
          f"inference {quartiles(infer[ours], infer[theirs])}")
    print(f"inference_time_ratio={paired_ratio(infer[ours], infer[theirs]):.2f}")
    print(f"train_step_time_ratio={paired_ratio(train[ours], train[theirs]):.2f}")


if __name__ == "__main__":
    main()
