"""Every registered model under the JAX backend, and no TensorFlow on that path.

Usage: `python tests/jax_backend_check.py [NAME ...]` (KERAS_BACKEND defaults
to jax here). Builds each registry entry named (default: all) at the small
test size, runs a forward pass, one SGD training step and a `.keras`
save/load round trip, and prints one line per model and a summary; first it
checks the improved CBAM's hand-written gradient against JAX autodiff. Exits
with status 1 if that check or a model fails or a pump_keras module imports TensorFlow. An
import of TensorFlow by Keras itself is reported, not failed: Keras'
`.keras` serialisation checks for `tf.TensorShape` whenever TensorFlow is
installed.

Forward passes use the jit-compiled `predict_on_batch` (inference mode), as
eager JAX compiles every operation separately; XLA's CPU optimisation level
is lowered (override with XLA_FLAGS) because compiling dominates these
one-step runs (about 40% less time).
"""

import argparse
import importlib.abc
import inspect
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

# The registry test (tests/models/test_model_registry.py) uses these too.
# 64 px: at 32 px the deepest maps are 1x1, and batch norm over 2 values per channel
# makes one SGD step explode (NaN logits) in the EfficientNets and ResNet50.
SMALL_INPUT_SHAPE = (64, 64, 3)
# Applied only where the builder's signature accepts them.
CHEAP_OPTIONS = {"width_multiplier": 0.25, "depth_multiplier": 0.25}
# Entries that need more than the defaults above at test time.
ENTRY_OPTIONS = {"conformer": {"d_model": 16, "num_blocks": 1, "num_heads": 2, "kernel_size": 3},
                 "dcase2020_ae": {"input_shape": (40,)}}  # frame vectors in, their reconstruction out


def small_options(name, builder):
    """Options building entry `name` small and cheap: input size, then cheap scalings."""
    parameters = inspect.signature(builder).parameters
    options = {"input_shape": SMALL_INPUT_SHAPE}
    options.update({key: value for key, value in CHEAP_OPTIONS.items() if key in parameters})
    options.update(ENTRY_OPTIONS.get(name, {}))
    return options


class TensorFlowImportWatch(importlib.abc.MetaPathFinder):
    """Records the stack of the first import of `tensorflow`; imports nothing itself."""

    def __init__(self):
        self.stack = None

    def find_spec(self, fullname, path=None, target=None):
        if fullname == "tensorflow" and self.stack is None:
            self.stack = traceback.extract_stack()[:-1]
        return None

    def importer(self):
        """Where the recorded import came from, and whether a pump_keras module made it."""
        frames = [f for f in self.stack
                  if "importlib" not in f.filename and not f.filename.endswith("module_utils.py")]
        ours = [f for f in frames if f"{os.sep}pump_keras{os.sep}" in f.filename]
        outer = [f for f in frames if f.filename == __file__][-1]
        inner = (ours or frames)[-1]
        return (f"{os.path.basename(outer.filename)}:{outer.lineno} `{outer.line}` -> "
                f"{inner.filename}:{inner.lineno} `{inner.line}`", bool(ours))


def check_model(name, build, builder, workdir):
    """Forward, one train step and a .keras round trip for entry `name`; returns a report line."""
    import keras
    import numpy as np

    started = time.perf_counter()
    options = small_options(name, builder)
    model = build(name, **options)
    images = np.random.default_rng(0).random((2, *options["input_shape"]), dtype=np.float32)
    reconstructs = len(options["input_shape"]) == 1  # a frames model: vectors in, vectors out
    logits = model.predict_on_batch(images)
    expected_shape = images.shape if reconstructs else (2, 1)
    assert logits.shape == expected_shape and logits.dtype == np.float32, (logits.shape, logits.dtype)

    before = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    model.compile(optimizer=keras.optimizers.SGD(0.01),
                  loss="mse" if reconstructs else keras.losses.BinaryCrossentropy(from_logits=True))
    targets = images if reconstructs else np.array([[0.0], [1.0]], dtype=np.float32)
    loss = float(model.train_on_batch(images, targets))
    assert np.isfinite(loss), loss
    after = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    assert any(not np.array_equal(a, b) for a, b in zip(before, after)), "no weight changed"
    trained_logits = model.predict_on_batch(images)
    assert np.all(np.isfinite(trained_logits)), trained_logits
    tensorflow_before_save = "tensorflow" in sys.modules

    path = os.path.join(workdir, f"{name}.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    difference = float(np.max(np.abs(restored.predict_on_batch(images) - trained_logits)))
    assert difference <= 1e-6, f"round trip differs by {difference}"
    return (f"{name:24s} ok  params={model.count_params():>10,d}  loss={loss:.4f}  "
            f"round-trip max|diff|={difference:.1e}  "
            f"tensorflow loaded before save: {tensorflow_before_save}  "
            f"{time.perf_counter() - started:.1f}s")


def check_improved_cbam_gradient():
    """The improved CBAM's hand-written gradient against JAX autodiff of the plain ops.

    Twice: on random features, and on coarse ones where many channels reach
    their maximum more than once (one channel is constant). The reference takes
    the channel maximum with `ops.max`, whose autodiff splits between ties.
    """
    import jax
    import keras
    import numpy as np

    from pump_keras.layers import attention

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 6, 32)).astype("float32")
    tied = np.round(x * 2) / 2
    tied[0, :, :, 3] = 1.5
    cotangent = rng.normal(size=x.shape).astype("float32")
    layer = attention.ImprovedCBAM(reduction=4)
    layer.build(x.shape)
    values = [(0.3 * rng.normal(size=w.shape)).astype("float32") for w in layer.trainable_weights]
    reduce_max = lambda inputs: keras.ops.max(inputs, axis=(1, 2), keepdims=True)  # noqa: E731

    def loss(values, x, fused):
        with keras.StatelessScope(state_mapping=list(zip(layer.trainable_weights, values))):
            if fused:
                y = layer.call(x)
            else:
                pooling, attention._global_max_pool = attention._global_max_pool, reduce_max
                try:
                    y = attention._simam(layer._channel_attention(x), layer.lambda_, "sigmoid")
                finally:
                    attention._global_max_pool = pooling
        return keras.ops.sum(y * cotangent)

    worst = 0.0
    for inputs in (x, tied):
        fused, reference = (jax.grad(loss, argnums=(0, 1))(values, inputs, flag) for flag in (True, False))
        for ours, theirs in zip(jax.tree_util.tree_leaves(fused), jax.tree_util.tree_leaves(reference)):
            ours, theirs = np.asarray(ours), np.asarray(theirs)
            worst = max(worst, float(np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs))))
    line = f"improved_cbam gradient against autodiff (random and tied maxima): max relative difference {worst:.1e}"
    assert worst < 1e-4, line
    return line


def check_row_standardization(build, workdir):
    """The per-band input standardisation on a model: fitted, trained one step, saved and loaded."""
    import keras
    import numpy as np

    from pump_keras.layers.standardization import row_standardization, with_row_standardization

    rng = np.random.default_rng(0)
    images = rng.random((4, *SMALL_INPUT_SHAPE), dtype=np.float32)
    model = with_row_standardization(build("plain_cnn", input_shape=SMALL_INPUT_SHAPE))
    row_standardization(model).set_statistics([images])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss=keras.losses.BinaryCrossentropy(from_logits=True))
    loss = float(model.train_on_batch(images, np.array([[0.0], [1.0], [0.0], [1.0]], np.float32)))
    path = os.path.join(workdir, "row_standardization.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded.predict_on_batch(images), model.predict_on_batch(images), rtol=1e-5, atol=1e-6)
    standardized = keras.ops.convert_to_numpy(row_standardization(loaded)(images))
    np.testing.assert_allclose(standardized.mean(axis=(0, 2)), 0.0, atol=1e-4)
    return f"row_standardization      ok  loss {loss:.3f}, save/load equal"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="registry entries to check (default: all)")
    args = parser.parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "jax")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault(
        "XLA_FLAGS", "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true")
    watch = TensorFlowImportWatch()
    sys.meta_path.insert(0, watch)
    import keras

    if keras.backend.backend() != "jax":
        print(f"Keras backend is {keras.backend.backend()!r}; run with KERAS_BACKEND=jax.")
        return 1
    from pump_keras.models import available_models, build, registry

    print("after importing pump_keras.models: tensorflow in sys.modules: "
          f"{'tensorflow' in sys.modules}", flush=True)
    unknown = sorted(set(args.names) - set(available_models()))
    if unknown:
        print(f"Unknown models {unknown}; available: {', '.join(available_models())}.")
        return 1
    names = args.names or available_models()
    failures = []
    try:
        print(check_improved_cbam_gradient(), flush=True)
    except Exception as error:
        failures.append("improved_cbam gradient")
        print(f"improved_cbam gradient FAILED  {type(error).__name__}: {error}", flush=True)
    with tempfile.TemporaryDirectory() as workdir:
        try:
            print(check_row_standardization(build, workdir), flush=True)
        except Exception as error:
            failures.append("row_standardization")
            print(f"row_standardization FAILED  {type(error).__name__}: {error}", flush=True)
        for name in names:
            try:
                print(check_model(name, build, registry.builder(name), workdir), flush=True)
            except Exception as error:  # report every model, then fail
                failures.append(name)
                print(f"{name:24s} FAILED  {type(error).__name__}: {error}", flush=True)

    tensorflow_loaded = "tensorflow" in sys.modules
    imported_by_us = False
    if watch.stack is not None:
        where, imported_by_us = watch.importer()
        print(f"tensorflow first imported from {where}")
    print(f"JAX backend: {len(set(names) - set(failures))}/{len(names)} models ok"
          + (f"; failed: {', '.join(failures)}" if failures else "")
          + f"; tensorflow in sys.modules: {tensorflow_loaded}"
          + ("; imported by a pump_keras module" if imported_by_us else ""))
    return 1 if failures or imported_by_us else 0


if __name__ == "__main__":
    sys.exit(main())
