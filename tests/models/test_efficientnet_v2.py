"""EfficientNetV2-S: exact parity with Keras' model, attention placement, weight loading."""

import keras
import numpy as np
import pytest

from pump_keras.models import build
from pump_keras.models.efficientnet_v2 import (
    EFFICIENTNETV2_S_STAGES, load_keras_application_weights, round_filters, with_attention)

PAPER_PARAMS = 20_332_641  # Keras EfficientNetV2S (no top, avg pool) + Dense(1)


@pytest.fixture(scope="module")
def keras_v2s_small():
    keras.utils.set_random_seed(1)
    return keras.applications.EfficientNetV2S(
        weights=None, include_top=False, pooling="avg", input_shape=(64, 64, 3))


def test_plain_variant_has_exactly_keras_parameter_count():
    ours = build("efficientnetv2_s", attention="se", input_shape=(224, 224, 3))
    theirs = keras.applications.EfficientNetV2S(
        weights=None, include_top=False, pooling="avg", input_shape=(224, 224, 3))
    assert theirs.count_params() + 1281 == PAPER_PARAMS
    assert ours.count_params() == PAPER_PARAMS


def test_layer_names_follow_keras(keras_v2s_small):
    ours = build("efficientnetv2_s", attention="se", input_shape=(64, 64, 3))
    our_names = {layer.name for layer in ours.layers}
    for layer in keras_v2s_small.layers:
        if layer.get_weights() and "_se_" not in layer.name:
            assert layer.name in our_names
    assert "block4a_se" in our_names and "block1a_se" not in our_names


def test_keras_weights_give_the_same_outputs(keras_v2s_small, tmp_path):
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (2, 64, 64, 3)).astype("float32")
    expected = keras_v2s_small.predict(images * 255.0, verbose=0)

    ours = build("efficientnetv2_s", attention="se", input_shape=(64, 64, 3))
    report = load_keras_application_weights(ours, keras_v2s_small)
    assert report["loaded"] == sum(1 for layer in keras_v2s_small.layers if layer.get_weights())
    features = keras.Model(ours.input, ours.get_layer("avg_pool").output)
    np.testing.assert_allclose(features.predict(images, verbose=0), expected, atol=2e-5, rtol=1e-4)

    # ... and from a weights file, as a user holding the ImageNet file would
    path = str(tmp_path / "efficientnetv2-s_notop.weights.h5")
    keras_v2s_small.save_weights(path)
    from_file = build("efficientnetv2_s", attention="se", input_shape=(64, 64, 3), weights=path)
    features = keras.Model(from_file.input, from_file.get_layer("avg_pool").output)
    np.testing.assert_allclose(features.predict(images, verbose=0), expected, atol=2e-5, rtol=1e-4)


def test_weights_load_into_the_improved_model_except_attention(keras_v2s_small):
    ours = build("efficientnetv2_s", attention="improved_cbam", input_shape=(64, 64, 3))
    report = load_keras_application_weights(ours, keras_v2s_small)
    se_layers = sum(1 for layer in keras_v2s_small.layers
                    if layer.name.endswith(("se_reduce", "se_expand")))
    assert report["skipped"] == se_layers and se_layers == 2 * (6 + 9 + 15)
    np.testing.assert_array_equal(ours.get_layer("stem_conv").get_weights()[0],
                                  keras_v2s_small.get_layer("stem_conv").get_weights()[0])


def test_mismatched_architecture_is_a_clear_error(keras_v2s_small):
    narrow = build("efficientnetv2_s", attention="se", input_shape=(64, 64, 3),
                   width_multiplier=0.5)
    with pytest.raises(ValueError, match="same width, depth"):
        load_keras_application_weights(narrow, keras_v2s_small)


def test_improved_cbam_replaces_se_in_stages_4_to_6_by_default():
    model = build("efficientnetv2_s", input_shape=(64, 64, 3))
    names = [layer.name for layer in model.layers]
    attention = [n for n in names if n.endswith("improved_cbam")]
    assert len(attention) == 6 + 9 + 15
    assert all(n[5] in "456" for n in attention)
    assert not any(n.endswith("_se") for n in names)
    everywhere = build("efficientnetv2_s", input_shape=(64, 64, 3), attention_placement="all")
    assert sum(layer.name.endswith("improved_cbam") for layer in everywhere.layers) == 40


def test_improved_cbam_parameter_cost_depends_on_reduction():
    se = build("efficientnetv2_s", attention="se", input_shape=(64, 64, 3)).count_params()
    r16 = build("efficientnetv2_s", input_shape=(64, 64, 3)).count_params()
    r8 = build("efficientnetv2_s", input_shape=(64, 64, 3), reduction=8).count_params()
    assert 1.6e6 < r16 - se < 1.9e6  # the documented "about 1.75 M" at r = 16
    assert r8 - r16 > 5e6


def test_stage_table_is_the_papers():
    rows = [(s.block, s.repeats, s.output_filters, s.expand_ratio, s.kernel_size, s.strides,
             s.attention) for s in EFFICIENTNETV2_S_STAGES]
    assert rows == [
        ("fused", 2, 24, 1, 3, 1, None), ("fused", 4, 48, 4, 3, 2, None),
        ("fused", 4, 64, 4, 3, 2, None), ("mbconv", 6, 128, 4, 3, 2, "se"),
        ("mbconv", 9, 160, 6, 3, 1, "se"), ("mbconv", 15, 256, 6, 3, 2, "se"),
    ]
    improved = with_attention(EFFICIENTNETV2_S_STAGES, "improved_cbam")
    assert [s.attention for s in improved] == [None] * 3 + ["improved_cbam"] * 3
    assert round_filters(24, 0.25) == 8 and round_filters(1280, 1.0) == 1280


def test_scaled_model_is_small_and_outputs_one_logit():
    model = build("efficientnetv2_s", input_shape=(32, 32, 3), width_multiplier=0.25,
                  depth_multiplier=0.25)
    assert model.count_params() < 400_000
    out = model(np.zeros((3, 32, 32, 3), "float32"))
    assert tuple(out.shape) == (3, 1)


def test_stem_downsampling_and_bn_momentum_options():
    model = build("efficientnetv2_s", input_shape=(32, 32, 3), width_multiplier=0.25,
                  depth_multiplier=0.25, stem_downsampling="max_pool", bn_momentum=0.99)
    stem = model.get_layer("stem_conv")
    assert stem.strides == (1, 1) and model.get_layer("stem_pool").pool_size == (2, 2)
    assert model.get_layer("stem_bn").momentum == 0.99
    assert tuple(model.get_layer("stem_pool").output.shape) == (None, 16, 16, 8)
    strided = build("efficientnetv2_s", input_shape=(32, 32, 3), width_multiplier=0.25,
                    depth_multiplier=0.25)
    assert strided.get_layer("stem_conv").strides == (2, 2)
    assert model.count_params() == strided.count_params()


@pytest.mark.parametrize("options,match", [
    ({"attention_placement": "fused"}, "placement"),
    ({"attention": "transformer"}, "transformer"),
    ({"input_shape": (16, 16, 3)}, "input_shape"),
    ({"width_multiplier": 0}, "multipliers"),
    ({"dropout_rate": 1.5}, "dropout"),
    ({"stem_downsampling": "avg_pool"}, "stem_downsampling"),
    ({"bn_momentum": 1.0}, "bn_momentum"),
])
def test_bad_options(options, match):
    with pytest.raises(ValueError, match=match):
        build("efficientnetv2_s", **{"input_shape": (32, 32, 3), **options})


INITIAL_WEIGHTS_DIGEST = """
import hashlib, sys
import keras, numpy as np
from pump_keras.models import build
keras.utils.set_random_seed(3)
model = build("efficientnetv2_s", input_shape=(32, 32, 3), width_multiplier=0.25, depth_multiplier=0.25)
print(hashlib.md5(b"".join(np.asarray(w).tobytes() for w in model.weights)).hexdigest())
"""


def test_initial_weights_depend_on_the_seed_alone_and_no_two_kernels_share_values():
    import subprocess
    import sys

    script = INITIAL_WEIGHTS_DIGEST
    digests = {subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": ""}).stdout.strip()
               for _ in range(2)}
    assert len(digests) == 1 and len(digests.pop()) == 32
    keras.utils.set_random_seed(3)
    model = build("efficientnetv2_s", attention="improved_cbam", input_shape=(32, 32, 3),
                  width_multiplier=0.25, depth_multiplier=0.25)
    kernels = [np.asarray(w).tobytes() for w in model.weights if w.path.endswith("kernel")]
    assert len(set(kernels)) == len(kernels)
