"""Attention layers against NumPy versions of the published formulas, and their contracts."""

import inspect

import keras
import numpy as np
import pytest
import scipy.linalg

from pump_keras.layers import attention
from pump_keras.layers.attention import (
    ATTENTIONS, CBAM, ECA, NAM, SOCA, ImprovedCBAM, SimAM, SqueezeExcite, available_attentions, build_attention,
    eca_kernel_size, second_order_pool, soca_pooling_flops)
from tests.conftest import REPO_ROOT

CHANNELS = 32
SHAPE = (2, 5, 6, CHANNELS)
ATOL = 1e-5
SOCA_ATOL = 1e-4  # float32 matrix products and Newton-Schulz against a float64 reference


def features(shape=SHAPE, seed=0):
    """Random channels_last features, float32."""
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def make(kind, **options):
    """A layer from the factory for a block whose input has `CHANNELS // 4` filters."""
    return build_attention(kind, input_filters=CHANNELS // 4, name=f"{kind}_attention", **options)


def randomise(layer, seed=1):
    """Non-trivial weights (biases and BN statistics included); variances kept positive."""
    rng = np.random.default_rng(seed)
    values = []
    for weight in layer.weights:
        value = 0.3 * rng.normal(size=weight.shape)
        if weight.name == "moving_variance":
            value = np.abs(value) + 0.5
        values.append(value.astype("float32"))
    layer.set_weights(values)


def built(kind, x, **options):
    """A layer built on `x`, with random weights."""
    layer = make(kind, **options)
    layer(x)
    randomise(layer)
    return layer


# --- NumPy versions of the published formulas (float64) ---------------------------

def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def mlp(vector, weights, activation):
    reduce_kernel, reduce_bias, expand_kernel, expand_bias = weights
    return activation(vector @ reduce_kernel + reduce_bias) @ expand_kernel + expand_bias


def relu(z):
    return np.maximum(z, 0.0)


def reference_se(x, weights):
    pooled = x.mean(axis=(1, 2), keepdims=True)
    return x * sigmoid(mlp(pooled, weights, lambda z: z * sigmoid(z)))


def reference_channel_attention(x, weights):
    average = mlp(x.mean(axis=(1, 2), keepdims=True), weights, relu)
    maximum = mlp(x.max(axis=(1, 2), keepdims=True), weights, relu)
    return x * sigmoid(average + maximum)


def reference_spatial_attention(x, kernel, bias):
    descriptors = np.concatenate([x.mean(axis=-1, keepdims=True), x.max(axis=-1, keepdims=True)], axis=-1)
    size = kernel.shape[0]
    pad = size // 2
    padded = np.pad(descriptors, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    height, width = x.shape[1:3]
    logits = np.zeros(x.shape[:3] + (1,))
    for i in range(height):
        for j in range(width):
            window = padded[:, i:i + size, j:j + size, :]
            logits[:, i, j, 0] = np.einsum("buvc,uvc->b", window, kernel[..., 0]) + bias[0]
    return x * sigmoid(logits)


def reference_simam(x, lambda_=1e-4):
    """The authors' code (ZjjConan/SimAM, simam_module.forward)."""
    n = x.shape[1] * x.shape[2] - 1
    squared = (x - x.mean(axis=(1, 2), keepdims=True)) ** 2
    inverse_energy = squared / (4 * (squared.sum(axis=(1, 2), keepdims=True) / n + lambda_)) + 0.5
    return x * sigmoid(inverse_energy)


def reference_simam_paper(x, lambda_=1e-4):
    """Eqs. (1)-(2) of the pump paper, with mean and variance over the other neurons of the channel."""
    batch, height, width, channels = x.shape
    out = np.empty_like(x)
    for b in range(batch):
        for c in range(channels):
            flat = x[b, :, :, c].reshape(-1)
            weights = np.empty_like(flat)
            for i in range(flat.size):
                others = np.delete(flat, i)
                energy = (flat[i] - others.mean()) ** 2 + lambda_ * others.var()
                weights[i] = 1.0 / (1.0 + energy)
            out[b, :, :, c] = (flat * weights).reshape(height, width)
    return out


def reference_eca(x, kernel):
    pooled = x.mean(axis=(1, 2))
    pad = (kernel.size - 1) // 2
    padded = np.pad(pooled, ((0, 0), (pad, pad)))
    logits = np.stack([padded[:, c:c + kernel.size] @ kernel for c in range(pooled.shape[1])], axis=1)
    return x * sigmoid(logits)[:, None, None, :]


def reference_nam(x, gamma, beta, mean, variance, epsilon):
    normalized = (x - mean) / np.sqrt(variance + epsilon) * gamma + beta
    weights = np.abs(gamma) / np.abs(gamma).sum()
    return x * sigmoid(normalized * weights)


def reference_san_pool(x, iterations, epsilon):
    """SAN's CovpoolLayer + SqrtmLayer (Dai et al. 2019 code, iterN >= 2) and the row mean."""
    batch, height, width, channels = x.shape
    positions = x.reshape(batch, height * width, channels).astype(np.float64)
    pooled = []
    for sample in positions:
        centred = sample - sample.mean(axis=0)
        covariance = centred.T @ centred / len(sample) + epsilon * np.eye(channels)
        three = 3.0 * np.eye(channels)
        norm = np.trace(covariance)
        a = covariance / norm
        zy = 0.5 * (three - a)
        y, z = a @ zy, zy
        for _ in range(1, iterations - 1):
            zy = 0.5 * (three - z @ y)
            y, z = y @ zy, zy @ z
        root = 0.5 * y @ (three - z @ y) * np.sqrt(norm)
        pooled.append(root.mean(axis=1))
    return np.stack(pooled)


def exact_pool(x, epsilon):
    """Row means of `scipy.linalg.sqrtm(Sigma + eps I)`."""
    batch, height, width, channels = x.shape
    pooled = []
    for sample in x.reshape(batch, height * width, channels).astype(np.float64):
        centred = sample - sample.mean(axis=0)
        covariance = centred.T @ centred / len(sample) + epsilon * np.eye(channels)
        pooled.append(np.real(scipy.linalg.sqrtm(covariance)).mean(axis=1))
    return np.stack(pooled)


# --- numerics ----------------------------------------------------------------------

def as64(layer):
    return [w.astype(np.float64) for w in layer.get_weights()]


def test_squeeze_excite_matches_formula():
    x = features()
    layer = built("se", x)
    np.testing.assert_allclose(layer(x), reference_se(x.astype(np.float64), as64(layer)), atol=ATOL)


def test_cbam_matches_formula():
    x = features()
    layer = built("cbam", x)
    weights = as64(layer)
    refined = reference_channel_attention(x.astype(np.float64), weights[:4])
    expected = reference_spatial_attention(refined, *weights[4:])
    np.testing.assert_allclose(layer(x), expected, atol=ATOL)


@pytest.mark.parametrize("mapping", ["sigmoid", "paper"])
def test_improved_cbam_is_channel_attention_then_simam(mapping):
    x = features()
    layer = built("improved_cbam", x, mapping=mapping)
    simam = reference_simam if mapping == "sigmoid" else reference_simam_paper
    expected = simam(reference_channel_attention(x.astype(np.float64), as64(layer)), layer.lambda_)
    np.testing.assert_allclose(layer(x), expected, atol=ATOL)


def unfused_improved_cbam(layer, x):
    """The improved CBAM as plain ops (channel attention, then SimAM), for autodiff."""
    return attention._simam(layer._channel_attention(x), layer.lambda_, "sigmoid")


@pytest.mark.parametrize("shape", [SHAPE, (3, 1, 1, CHANNELS), (2, 7, 7, 4 * CHANNELS)])
def test_improved_cbam_gradient_matches_autodiff(shape):
    import tensorflow as tf

    x = tf.constant(features(shape))
    cotangent = tf.constant(features(shape, seed=3))
    layer = built("improved_cbam", x)
    gradients = []
    for function in (layer, lambda inputs: unfused_improved_cbam(layer, inputs)):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(function(x) * cotangent)
        gradients.append(tape.gradient(loss, [x, *layer.trainable_weights]))
    for name, fused, reference in zip(["x"] + [w.name for w in layer.trainable_weights], *gradients):
        scale = float(tf.reduce_max(tf.abs(reference)))
        assert scale > 0, name
        np.testing.assert_allclose(fused, reference, rtol=1e-4, atol=1e-5 * scale, err_msg=name)


def test_improved_cbam_gradient_splits_tied_maxima(monkeypatch):
    """Where a channel's maximum is reached more than once, each place gets an equal share, as `max`'s autodiff does."""
    import tensorflow as tf

    # Coarse values give many channels tied maxima; a constant channel ties everywhere.
    x = np.round(features((2, 4, 5, CHANNELS)) * 2) / 2
    x[0, :, :, 3] = 1.5
    ties = (x == x.max(axis=(1, 2), keepdims=True)).sum(axis=(1, 2))
    assert (ties > 1).sum() >= 10 and ties.max() == 20
    x = tf.constant(x)
    cotangent = tf.constant(features(x.shape, seed=3))
    layer = built("improved_cbam", x)

    def gradient(function):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(function(x) * cotangent)
        return tape.gradient(loss, [x, *layer.trainable_weights])

    fused = gradient(layer)
    # Reference: autodiff through a global reduce-max, whose gradient is split between ties.
    monkeypatch.setattr(attention, "_global_max_pool", lambda inputs: tf.reduce_max(inputs, axis=(1, 2), keepdims=True))
    reference = gradient(lambda inputs: unfused_improved_cbam(layer, inputs))
    for name, ours, theirs in zip(["x"] + [w.name for w in layer.trainable_weights], fused, reference):
        scale = float(tf.reduce_max(tf.abs(theirs)))
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5 * scale, err_msg=name)


def test_simam_matches_authors_code():
    x = features()
    np.testing.assert_allclose(make("simam")(x), reference_simam(x.astype(np.float64)), atol=ATOL)


def test_simam_paper_mapping_uses_the_other_neurons():
    x = features((1, 3, 4, 3))
    layer = SimAM(mapping="paper", lambda_=0.5)
    np.testing.assert_allclose(layer(x), reference_simam_paper(x.astype(np.float64), 0.5), atol=ATOL)


def test_simam_lambda_defaults_to_the_paper_value_under_the_paper_mapping():
    # Eq. (1)'s lambda is "a small constant, such as 1" in the pump paper; 1e-4 is SimAM's own.
    x = features((1, 3, 4, 3))
    assert attention.SIMAM_DEFAULT_LAMBDA == {"sigmoid": 1e-4, "paper": 1.0}
    for cls in (SimAM, ImprovedCBAM):
        assert cls(mapping="paper").lambda_ == 1.0 and cls().lambda_ == 1e-4
        assert cls(mapping="paper", lambda_=0.5).lambda_ == 0.5
    np.testing.assert_allclose(SimAM(mapping="paper")(x), reference_simam_paper(x.astype(np.float64), 1.0),
                               atol=ATOL)
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert '`mapping="paper"` (lambda 1' in readme


def test_simam_on_a_single_position_is_finite():
    x = features((2, 1, 1, 4))
    for mapping in ("sigmoid", "paper"):
        assert np.all(np.isfinite(SimAM(mapping=mapping)(x)))


def test_eca_matches_formula():
    x = features()
    layer = built("eca", x)
    assert layer.kernel.shape == (eca_kernel_size(CHANNELS),) == (3,)
    np.testing.assert_allclose(layer(x), reference_eca(x.astype(np.float64), as64(layer)[0]), atol=ATOL)


@pytest.mark.parametrize("channels, size", [(1, 1), (32, 3), (64, 3), (256, 5), (1536, 5)])
def test_eca_kernel_size_is_odd_and_adaptive(channels, size):
    assert eca_kernel_size(channels) == size


def test_nam_matches_formula_in_inference_and_training():
    x = features()
    layer = built("nam", x)
    gamma, beta, mean, variance = as64(layer)
    x64 = x.astype(np.float64)
    inference = reference_nam(x64, gamma, beta, mean, variance, layer.epsilon)
    np.testing.assert_allclose(layer(x, training=False), inference, atol=ATOL)
    batch_mean, batch_variance = x64.mean(axis=(0, 1, 2)), x64.var(axis=(0, 1, 2))
    training = reference_nam(x64, gamma, beta, batch_mean, batch_variance, layer.epsilon)
    np.testing.assert_allclose(layer(x, training=True), training, atol=ATOL)
    assert not np.allclose(layer.bn.moving_mean.numpy(), mean)


def test_soca_matches_san():
    x = features()
    layer = built("soca", x)
    pooled = reference_san_pool(x, layer.iterations, layer.epsilon)
    expected = x * sigmoid(mlp(pooled, as64(layer), relu))[:, None, None, :]
    np.testing.assert_allclose(layer(x), expected, atol=SOCA_ATOL)


def test_soca_sides_agree():
    x = features((2, 3, 4, CHANNELS))
    channel = second_order_pool(x, side="channel")
    gram = second_order_pool(x, side="gram")
    np.testing.assert_allclose(gram, channel, atol=SOCA_ATOL)
    np.testing.assert_allclose(channel, reference_san_pool(x, 5, 1e-5), atol=SOCA_ATOL)


@pytest.mark.parametrize("shape, side", [((2, 5, 6, 8), "channel"), ((2, 3, 4, CHANNELS), "gram")])
def test_soca_square_root_converges_to_scipy(shape, side):
    x = features(shape)
    pooled = second_order_pool(x, iterations=40, epsilon=1e-10, side=side)
    np.testing.assert_allclose(pooled, exact_pool(x, 1e-10), atol=SOCA_ATOL)


def test_soca_picks_the_cheaper_side():
    assert attention.choose_soca_side(3, 4, 32) == "gram"
    assert attention.choose_soca_side(5, 6, 8) == "channel"
    assert attention.choose_soca_side(None, None, 32) == "channel"


def test_soca_flops():
    flops = soca_pooling_flops(7, 7, 1536)
    c, m = 1536, 49
    assert flops["channel"] == 2 * c * c * m + 12 * 2 * c**3
    assert flops["gram"] == 2 * m * m * c + 12 * 2 * m**3 + 2 * m * m + 2 * c * m
    assert flops["gram"] * 1000 < flops["channel"]
    wide = soca_pooling_flops(14, 14, 960)
    assert wide["gram"] < wide["channel"]


# --- parameter counts ----------------------------------------------------------------

@pytest.mark.parametrize(
    "kind, params",
    [
        ("se", 2 * 64 * 4 + 4 + 64),  # input_filters 16 -> r = 4
        ("cbam", 2 * 64 * 4 + 4 + 64 + 7 * 7 * 2 + 1),  # r = 64 // 16 = 4, 7x7 conv with bias
        ("improved_cbam", 2 * 64 * 4 + 4 + 64),  # the channel MLP only
        ("simam", 0),
        ("eca", 3),
        ("nam", 4 * 64),  # gamma, beta trainable; moving mean, variance not
        ("soca", 2 * 64 * 4 + 4 + 64),
    ],
)
def test_parameter_counts(kind, params):
    layer = build_attention(kind, input_filters=16, name=kind)
    layer.build((None, 4, 4, 64))
    assert layer.count_params() == params


def test_se_weights_map_onto_keras_applications_convolutions():
    layer = build_attention("se", input_filters=16, name="se")
    layer.build((None, 4, 4, 64))
    assert [(w.name, tuple(w.shape)) for w in layer.weights] == [
        ("reduce_kernel", (64, 4)),
        ("reduce_bias", (4,)),
        ("expand_kernel", (4, 64)),
        ("expand_bias", (64,)),
    ]


def test_improved_cbam_costs_about_1_75_m_more_than_se_in_stages_4_to_6():
    stages = [(6, 64, 128, 4), (9, 128, 160, 6), (15, 160, 256, 6)]  # repeats, in, out, expansion
    extra = 0
    for repeats, first_filters, filters, expansion in stages:
        for index in range(repeats):
            input_filters = first_filters if index == 0 else filters
            shape = (None, 2, 2, input_filters * expansion)
            counts = []
            for kind in ("improved_cbam", "se"):
                layer = build_attention(kind, input_filters=input_filters, name=kind)
                layer.build(shape)
                counts.append(layer.count_params())
            extra += counts[0] - counts[1]
    assert extra == 1_747_076


# --- factory -----------------------------------------------------------------------------

def test_factory_reduces_se_from_the_block_input_filters():
    layer = build_attention("se", input_filters=64, name="x")
    assert isinstance(layer, SqueezeExcite) and layer.reduced_filters == 16 and layer.name == "x"
    assert build_attention("se", input_filters=2, se_ratio=0.25, name="y").reduced_filters == 1


def test_factory_passes_reduction_and_options():
    cbam = build_attention("cbam", input_filters=8, reduction=8, spatial_kernel=3, name="c")
    assert (cbam.reduction, cbam.spatial_kernel) == (8, 3)
    improved = build_attention("improved_cbam", input_filters=8, name="i", mapping="paper", lambda_=0.1)
    assert (improved.reduction, improved.mapping, improved.lambda_) == (16, "paper", 0.1)
    assert build_attention("soca", input_filters=8, reduction=4, name="s").reduction == 4


def test_factory_rejects_unknown_kinds_and_options():
    with pytest.raises(ValueError, match="available: cbam, eca, improved_cbam, nam, se, simam, soca"):
        build_attention("coordinate", input_filters=8, name="x")
    with pytest.raises(ValueError, match="mapping"):
        build_attention("simam", input_filters=8, name="x", mapping="softmax")


def test_registry_names():
    assert available_attentions() == ["cbam", "eca", "improved_cbam", "nam", "se", "simam", "soca"]
    assert ATTENTIONS["improved_cbam"] is ImprovedCBAM and ATTENTIONS["cbam"] is CBAM
    assert (ATTENTIONS["eca"], ATTENTIONS["nam"], ATTENTIONS["soca"]) == (ECA, NAM, SOCA)


# --- shapes, serialisation, mixed precision ---------------------------------------------

@pytest.mark.parametrize("kind", available_attentions())
def test_dynamic_batch_and_spatial_size(kind):
    layer = make(kind)
    assert layer.compute_output_shape((None, 5, 6, CHANNELS)) == (None, 5, 6, CHANNELS)
    for spatial in [(None, None), (3, 4)]:
        inputs = keras.Input(spatial + (CHANNELS,))
        model = keras.Model(inputs, layer(inputs))
        for shape in [(1, 3, 4, CHANNELS), (3, 3, 4, CHANNELS)]:
            x = features(shape)
            np.testing.assert_allclose(model.predict(x, verbose=0), layer(x), atol=ATOL)


def test_nam_follows_the_training_flag_inside_a_model():
    inputs = keras.Input(SHAPE[1:])
    layer = make("nam")
    model = keras.Model(inputs, layer(inputs))
    model(features(), training=False)
    assert np.allclose(layer.bn.moving_mean.numpy(), 0.0)
    model(features(), training=True)
    assert not np.allclose(layer.bn.moving_mean.numpy(), 0.0)


@pytest.mark.parametrize("kind", available_attentions())
def test_save_and_load(kind, tmp_path):
    x = features()
    inputs = keras.Input(SHAPE[1:])
    layer = make(kind)
    outputs = keras.layers.Dense(1)(keras.layers.GlobalAveragePooling2D()(layer(inputs)))
    model = keras.Model(inputs, outputs)
    randomise(layer)
    path = tmp_path / f"{kind}.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    np.testing.assert_array_equal(restored(x), model(x))
    assert type(restored.get_layer(layer.name)) is type(layer)


@pytest.mark.parametrize("kind", available_attentions())
def test_config_round_trip(kind):
    x = features()
    layer = built(kind, x)
    twin = layer.__class__.from_config(layer.get_config())
    assert twin.get_config() == layer.get_config()
    twin(x)
    twin.set_weights(layer.get_weights())
    np.testing.assert_array_equal(twin(x), layer(x))


def test_configs_name_every_constructor_argument():
    for cls in ATTENTIONS.values():
        arguments = set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}
        config = cls(**({"reduced_filters": 4} if cls is SqueezeExcite else {})).get_config()
        assert arguments <= set(config), cls.__name__


@pytest.fixture
def mixed_bfloat16():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("kind", available_attentions())
def test_mixed_precision(kind, mixed_bfloat16):
    layer = make(kind)
    for x in (features(), np.full(SHAPE, 3.0, dtype="float32")):
        x = keras.ops.cast(x, "bfloat16")
        y = layer(x)
        assert keras.backend.standardize_dtype(y.dtype) == "bfloat16"
        assert np.all(np.isfinite(keras.ops.convert_to_numpy(keras.ops.cast(y, "float32"))))
    assert all(keras.backend.standardize_dtype(w.dtype) == "float32" for w in layer.weights)


def test_source_is_backend_neutral():
    source = inspect.getsource(attention)
    assert "tensorflow" not in source and "tf." not in source
