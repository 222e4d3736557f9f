"""Training throughput of the improved-CBAM EfficientNetV2-S against Keras' EfficientNetV2S.

Images per second of one training step (SGD with momentum, BCE from logits)
for two models under the same settings, measured in one run:

* `ours`: `build("efficientnetv2_s", attention="improved_cbam", ...)`;
* `reference`: `build("efficientnetv2s_keras", ...)`, keras.applications'
  EfficientNetV2S with the same one-logit head. Its builder takes no width or
  depth multipliers, so when `--width` or `--depth` is not 1 the reference is
  our own plain EfficientNetV2-S (`build("efficientnetv2_s", attention="se")`,
  the same network as Keras' at 1.0) at the same multipliers; the output
  says which one ran.

Runs on the TensorFlow and the JAX backend (`KERAS_BACKEND=jax`); under JAX
nothing here imports TensorFlow, so it runs where TensorFlow is not
installed. The data is synthetic and in memory: random NumPy images in
[0, 1] and random 0/1 labels, one batch reused every step (its host-to-device
copy is part of each step, the same for both models).

Timing uses `model.train_on_batch`, not `fit`: one call is exactly one
optimizer step, with no data adapter, callbacks or progress bar around it, and
it returns the loss as a Python float, so the call ends only when the device
has finished the step. That lets the two models alternate step by step, so
the noise of a shared machine hits both alike. After `--warmup` untimed steps
per model (the first one traces and compiles), each round times one step of
each model; the table shows per-model medians, and the ratio is the median
over rounds of ours / reference images/s (each round's two steps run back to
back, which cancels slow drifts).

`--jit-compile` is passed to `model.compile(jit_compile=...)` on TensorFlow
(XLA; without it, a plain `tf.function` graph). On JAX the train step is
always compiled with `jax.jit` whatever the flag: Keras' `jit_compile=False`
there would run the step op by op, which times Python, not the model.

On TensorFlow both models run under its BFC host allocator, as `pump_keras`
training does (`TrainConfig.cpu_allocator`); `--cpu-allocator default` picks
TensorFlow's own. JAX ignores the flag.

Last line: `train_throughput_ratio=X.XX` (ours over the reference's images/s;
above 1 means ours trains faster).

    python benchmarks/train_throughput.py [--image-size 224] [--batch 16] [--steps 5]
        [--warmup 2] [--width 1.0] [--depth 1.0]
        [--mixed-precision {none,mixed_float16,mixed_bfloat16}] [--jit-compile]
        [--models ours reference] [--cpu-allocator {bfc,default}]
    KERAS_BACKEND=jax python benchmarks/train_throughput.py ...
"""

from __future__ import annotations

import argparse
import inspect
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from pump_keras.models import build, registry  # noqa: E402
from pump_keras.training.cpu_allocator import CPU_ALLOCATORS, select_cpu_allocator  # noqa: E402

MODEL_NAMES = ("ours", "reference")


def devices() -> str:
    """The devices the backend computes on, in its own words."""
    if keras.config.backend() == "jax":
        import jax

        return ", ".join(str(device) for device in jax.devices())
    import tensorflow as tf  # the TensorFlow backend has loaded it already

    return ", ".join(device.name for device in tf.config.list_logical_devices())


def model_specs(image_size: int, width: float, depth: float) -> dict:
    """name -> (description, registry entry, build options) for ours and the reference."""
    shape = (image_size, image_size, 3)
    scaling = {"width_multiplier": width, "depth_multiplier": depth}
    specs = {"ours": ("efficientnetv2_s + improved_cbam", "efficientnetv2_s",
                      dict(attention="improved_cbam", input_shape=shape, **scaling))}
    keras_options = inspect.signature(registry.builder("efficientnetv2s_keras")).parameters
    if (width, depth) == (1.0, 1.0):
        specs["reference"] = ("keras.applications.EfficientNetV2S", "efficientnetv2s_keras",
                              dict(input_shape=shape))
    elif set(scaling) <= set(keras_options):
        specs["reference"] = ("keras.applications.EfficientNetV2S", "efficientnetv2s_keras",
                              dict(input_shape=shape, **scaling))
    else:
        specs["reference"] = ("efficientnetv2_s + se (Keras' EfficientNetV2S takes no "
                              "multipliers)", "efficientnetv2_s",
                              dict(attention="se", input_shape=shape, **scaling))
    return specs


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per model first")
    parser.add_argument("--width", type=float, default=1.0, help="width multiplier")
    parser.add_argument("--depth", type=float, default=1.0, help="depth multiplier")
    parser.add_argument("--mixed-precision", default="none",
                        choices=["none", "mixed_float16", "mixed_bfloat16"])
    parser.add_argument("--jit-compile", action="store_true",
                        help="XLA on TensorFlow; JAX always jit-compiles")
    parser.add_argument("--models", nargs="+", choices=MODEL_NAMES, default=list(MODEL_NAMES))
    parser.add_argument("--cpu-allocator", choices=CPU_ALLOCATORS, default="bfc",
                        help="TensorFlow's host allocator (default: bfc, as pump_keras training)")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 1:
        parser.error("--steps and --warmup must be at least 1 (the first step compiles).")
    select_cpu_allocator(args.cpu_allocator)  # before the first TensorFlow op

    backend = keras.config.backend()
    if args.mixed_precision != "none":
        keras.mixed_precision.set_global_policy(args.mixed_precision)
    jit_compile = True if backend == "jax" else args.jit_compile
    specs = model_specs(args.image_size, args.width, args.depth)
    names = [name for name in MODEL_NAMES if name in args.models]

    # Weights stay unseeded: keras.utils.set_random_seed imports TensorFlow wherever it
    # is installed, and the speed of a step does not depend on the draw.
    models = {}
    for name in names:
        _, entry, options = specs[name]
        model = build(entry, **options)
        model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                      loss=keras.losses.BinaryCrossentropy(from_logits=True),
                      jit_compile=jit_compile)
        models[name] = model

    shape = (args.image_size, args.image_size, 3)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (args.batch,) + shape).astype("float32")
    labels = rng.integers(0, 2, (args.batch, 1)).astype("float32")

    warmup = {name: timed(lambda: [model.train_on_batch(images, labels)
                                   for _ in range(args.warmup)])
              for name, model in models.items()}
    seconds = {name: [] for name in models}
    for _ in range(args.steps):
        for name, model in models.items():
            seconds[name].append(timed(lambda: model.train_on_batch(images, labels)))
    throughput = {name: [args.batch / s for s in times] for name, times in seconds.items()}

    print(f"backend: {backend} (keras {keras.__version__})")
    print(f"devices: {devices()}")
    print(f"settings: input {shape}, batch {args.batch}, width {args.width}, depth {args.depth}, "
          f"dtype policy {keras.config.dtype_policy().name}, "
          f"jit_compile {jit_compile}, "
          f"cpu allocator {args.cpu_allocator if backend == 'tensorflow' else 'n/a (JAX)'}, "
          f"{args.warmup} warm-up + {args.steps} timed alternating steps per model, "
          f"{os.cpu_count()} CPU cores")
    for name in models:
        description, entry, _ = specs[name]
        print(f"{name:12s}{entry}: {description}, {models[name].count_params():,d} params, "
              f"compiled with jit_compile={models[name].jit_compile}")
    print(f"{'':12s}{'images/s':>10s}{'s/step':>10s}{'warm-up s':>11s}   images/s by step")
    for name in models:
        print(f"{name:12s}{statistics.median(throughput[name]):>10.2f}"
              f"{statistics.median(seconds[name]):>10.3f}{warmup[name]:>11.1f}   "
              + " ".join(f"{x:.2f}" for x in throughput[name]))
    if len(models) < 2:
        print("no train_throughput_ratio: it needs both models (--models ours reference)")
        return
    ratio = statistics.median(a / b for a, b in zip(throughput["ours"], throughput["reference"]))
    print(f"train_throughput_ratio={ratio:.2f}")


if __name__ == "__main__":
    main()
