"""Every registered model: forward, one training step, `.keras` round trip (timm-style).

A model is covered the moment it is registered. Builders are called at a small
input size, with cheap width/depth options where they accept them (the table
of test options is shared with `tests/jax_backend_check.py`). The one
training step runs eagerly: tracing it into a graph costs 5-10 times the step
itself on a small CPU (30 s for EfficientNetB7), and the functional build has
already traced every layer symbolically. `test_registry_under_jax_backend`
reruns the check under JAX (jit-compiled step) in a subprocess. The zoo's own
pieces (patch unfold/fold, caffe preprocessing, MobileViT sizes, option
checks) and the Conformer's (relative-position attention, size) have short
tests at the end.
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from pump_keras.models import available_models, build, conformer, registry, zoo
from tests import jax_backend_check
from tests.conftest import REPO_ROOT

# The JAX run covers the models built from this project's own layers; the
# keras.applications wrappers (Keras' own code, 20-90 s of jit compiling each)
# are left to `python tests/jax_backend_check.py`, which checks every entry.
JAX_REDUNDANT = {f"efficientnet_b{i}" for i in range(0, 8)} | {"efficientnetv2s_keras", "resnet50"}


def small_options(name):
    """Small, cheap build options for entry `name` (the table lives in jax_backend_check)."""
    return jax_backend_check.small_options(name, registry.builder(name))


def weights_of(model):
    return [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]


@pytest.mark.parametrize("name", available_models("images"))
def test_forward_train_step_and_keras_round_trip(name, tmp_path):
    keras.utils.set_random_seed(0)
    options = small_options(name)
    model = build(name, **options)
    assert model.name.startswith(name)
    images = np.random.default_rng(0).random((2, *options["input_shape"]), dtype=np.float32)

    logits = model(images, training=False)
    assert tuple(logits.shape) == (2, 1)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    # A fresh network starts undecided: its logits spread little over a
    # batch. A head scaled for 1000 classes spreads them by several units,
    # and the first steps' gradients are that many times too large.
    batch = np.random.default_rng(1).random((8, *options["input_shape"]), dtype=np.float32)
    assert np.std(keras.ops.convert_to_numpy(model(batch, training=True))) < 1.5

    before = weights_of(model)
    model.compile(optimizer=keras.optimizers.SGD(0.01),
                  loss=keras.losses.BinaryCrossentropy(from_logits=True), run_eagerly=True)
    loss = model.train_on_batch(images, np.array([[0.0], [1.0]], dtype=np.float32))
    assert np.isfinite(loss)
    assert any(not np.array_equal(a, b) for a, b in zip(before, weights_of(model)))

    trained_logits = keras.ops.convert_to_numpy(model(images, training=False))
    assert np.all(np.isfinite(trained_logits))

    path = tmp_path / f"{name}.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(restored(images, training=False)), trained_logits, atol=1e-6)


@pytest.mark.parametrize("name", available_models("frames"))
def test_frame_models_reconstruct_train_and_round_trip(name, tmp_path):
    keras.utils.set_random_seed(0)
    model = build(name, input_shape=(40,))
    vectors = np.random.default_rng(0).normal(size=(16, 40)).astype(np.float32)
    assert tuple(model(vectors, training=False).shape) == (16, 40)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse", run_eagerly=True)
    first = model.train_on_batch(vectors, vectors)
    for _ in range(20):
        last = model.train_on_batch(vectors, vectors)
    assert np.isfinite(first) and last < first
    path = tmp_path / f"{name}.keras"
    model.save(path)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(keras.saving.load_model(path)(vectors)),
                               keras.ops.convert_to_numpy(model(vectors)), atol=1e-6)


def test_model_inputs_split_the_registry():
    assert set(available_models("images")) | set(available_models("frames")) == set(available_models())
    assert "dcase2020_ae" in available_models("frames") and "efficientnetv2_s" in available_models("images")
    with pytest.raises(ValueError, match="inputs must be one of"):
        registry.register_model("x", inputs="text")


def test_unknown_model_names_the_available_ones():
    with pytest.raises(ValueError, match="nope") as raised:
        build("nope")
    for name in available_models():
        assert name in str(raised.value)


def test_registry_under_jax_backend():
    names = [name for name in available_models() if name not in JAX_REDUNDANT]  # the autoencoder too
    result = subprocess.run([sys.executable, jax_backend_check.__file__, *names], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=900,
                            env={**os.environ, "KERAS_BACKEND": "jax"})
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    assert "improved_cbam gradient against autodiff" in result.stdout


# ---------------------------------------------------------------- zoo pieces


def test_patch_unfold_then_fold_is_identity():
    features = np.random.default_rng(1).random((2, 6, 4, 5), dtype=np.float32)
    sequences = zoo.PatchUnfold(2)(features)
    assert tuple(sequences.shape) == (2 * 4, 3 * 2, 5)
    # Sequence (b, i, j) holds pixel (i, j) of every patch of image b.
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(sequences)[4 + 1, 0], features[1, 0, 1])
    folded = zoo.PatchFold(6, 4, 2)(sequences)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(folded), features)


def test_patch_fold_restores_sizes_not_divisible_by_the_patch():
    features = np.random.default_rng(2).random((1, 7, 5, 3), dtype=np.float32)
    sequences = zoo.PatchUnfold(2)(features)
    assert tuple(sequences.shape) == (4, 4 * 3, 3)
    assert tuple(zoo.PatchFold(7, 5, 2)(sequences).shape) == (1, 7, 5, 3)


def test_caffe_preprocessing_matches_keras_resnet50_preprocess_input():
    images = np.random.default_rng(3).random((2, 4, 4, 3), dtype=np.float32)
    expected = keras.applications.resnet50.preprocess_input(images * 255.0)
    actual = zoo.ImageNetCaffePreprocessing()(images)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(actual),
                               keras.ops.convert_to_numpy(expected), atol=1e-4)


@pytest.mark.parametrize("variant, millions", [("xxs", 1.3), ("xs", 2.3), ("s", 5.6)])
def test_mobilevit_sizes_match_the_paper(variant, millions):
    # The paper counts a 1000-class head; ours has one logit.
    model = build("mobilevit", variant=variant, input_shape=(64, 64, 3), dropout_rate=0.0)
    head_filters = zoo.MOBILEVIT_VARIANTS[variant].head_filters
    imagenet_count = model.count_params() - (head_filters + 1) + (head_filters + 1) * 1000
    assert imagenet_count / 1e6 == pytest.approx(millions, abs=0.05)


@pytest.mark.parametrize("name, options, message", [
    ("efficientnet_b0", {"input_shape": (16, 16, 3)}, "input_shape"),
    ("efficientnet_b0", {"input_shape": (64, 64, 1)}, "input_shape"),
    ("efficientnet_b3", {"dropout_rate": 1.5}, "dropout_rate"),
    ("resnet50", {"weights": "imagenet"}, "weights"),
    ("mobilevit", {"variant": "xl"}, "variant"),
    ("mobilevit", {"input_shape": (48, 48, 3)}, "divisible by 32"),
    ("mobilevit", {"num_heads": 7}, "num_heads"),
    ("plain_cnn", {"filters": ()}, "filters"),
    ("conformer", {"num_heads": 5}, "num_heads must divide d_model 144"),
    ("conformer", {"num_blocks": 0}, "num_blocks"),
    ("conformer", {"input_shape": (2, 64, 3)}, "input_shape"),
])
def test_builders_reject_bad_options(name, options, message):
    with pytest.raises(ValueError, match=message):
        build(name, **options)


def test_efficientnet_weights_file_is_passed_to_keras_applications(tmp_path):
    source = keras.applications.EfficientNetB0(include_top=False, weights=None, pooling="avg",
                                               input_shape=(64, 64, 3))
    path = tmp_path / "efficientnetb0_notop.weights.h5"
    source.save_weights(path)
    model = build("efficientnet_b0", input_shape=(64, 64, 3), weights=str(path))
    loaded = model.get_layer("efficientnetb0").get_weights()
    for expected, actual in zip(source.get_weights(), loaded, strict=True):
        np.testing.assert_array_equal(actual, expected)


# ---------------------------------------------------------------- Conformer


def reference_relative_attention(x, kernels, num_heads, key_dim):
    """Transformer-XL relative self-attention, one score at a time, in NumPy (float64)."""
    query, key, value, position, content_bias, position_bias, output, output_bias = kernels
    frames, width = x.shape[1], x.shape[2]
    out = np.zeros_like(x)
    for b in range(x.shape[0]):
        q, k, v = (np.einsum("tw,whk->thk", x[b], kernel) for kernel in (query, key, value))
        attended = np.zeros((frames, num_heads, key_dim))
        for h in range(num_heads):
            scores = np.zeros((frames, frames))
            for i in range(frames):
                for j in range(frames):
                    r = conformer.sinusoids(np.array([i - j], "float32"), width)
                    r = np.asarray(keras.ops.convert_to_numpy(r), np.float64)[0]
                    scores[i, j] = ((q[i, h] + content_bias[h]) @ k[j, h]
                                    + (q[i, h] + position_bias[h]) @ (r @ position[:, h])) / np.sqrt(key_dim)
            weights = np.exp(scores - scores.max(axis=1, keepdims=True))
            weights /= weights.sum(axis=1, keepdims=True)
            attended[:, h] = weights @ v[:, h]
        out[b] = np.einsum("thk,hkw->tw", attended, output) + output_bias
    return out


def test_relative_attention_matches_transformer_xl_scores():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 5, 8)).astype("float32")
    layer = conformer.RelativeMultiHeadAttention(num_heads=2, key_dim=3)
    layer.build(x.shape)
    values = [rng.normal(scale=0.5, size=w.shape).astype("float32") for w in layer.weights]
    layer.set_weights(values)  # the biases too, so that u and v are not zero
    expected = reference_relative_attention(x.astype(np.float64), [v.astype(np.float64) for v in values], 2, 3)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), expected, atol=1e-4)


def test_relative_attention_config_and_keras_round_trip(tmp_path):
    layer = conformer.RelativeMultiHeadAttention(num_heads=2, key_dim=4, dropout=0.1, max_wavelength=500.0)
    config = layer.get_config()
    assert {k: config[k] for k in ("num_heads", "key_dim", "dropout", "max_wavelength")} == {
        "num_heads": 2, "key_dim": 4, "dropout": 0.1, "max_wavelength": 500.0}
    assert conformer.RelativeMultiHeadAttention.from_config(config).get_config() == config
    inputs = keras.Input((6, 8))
    model = keras.Model(inputs, layer(inputs))
    x = np.random.default_rng(5).normal(size=(2, 6, 8)).astype("float32")
    path = tmp_path / "attention.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert restored.layers[-1].get_config() == config
    np.testing.assert_allclose(keras.ops.convert_to_numpy(restored(x)), keras.ops.convert_to_numpy(model(x)),
                               atol=1e-6)


def test_conformer_attends_over_the_time_columns():
    # Subsampled by 4 on both axes: 64 rows x 32 columns -> 8 frames of 16 rows x d_model.
    model = build("conformer", input_shape=(64, 32, 3), d_model=16, num_blocks=1, num_heads=2, kernel_size=3)
    assert tuple(model.get_layer("frames").output.shape) == (None, 8, 16 * 16)
    assert "block1_mhsa_attention" in [layer.name for layer in model.layers]


def test_conformer_default_is_conformer_s_sized():
    # Gulati et al.'s Conformer (S): d 144, 16 blocks, 4 heads; 10.3 M parameters with its LSTM decoder.
    model = build("conformer")
    blocks = [layer for layer in model.layers if layer.name.endswith("_mhsa_attention")]
    assert len(blocks) == 16 and (blocks[0].num_heads, blocks[0].key_dim) == (4, 36)
    assert model.count_params() / 1e6 == pytest.approx(9.46, abs=0.01)
