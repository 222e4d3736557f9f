"""Training setup and recipe: model options, initial weights, reseeding, class weights, MixUp batches."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from pump_keras.config import (
    EfficientNetV2Options, ModelConfig, TrainConfig, config_from_json, load_config, preset, replace, to_dict)
from pump_keras.models import build
from pump_keras.training import cpu_allocator, recipe, setup
from pump_keras.training.optimizers import SGDWithL2
from pump_keras.training.setup import InitError
from tests.conftest import REPO_ROOT

SHAPE = (64, 64, 3)
SMALL = ModelConfig(efficientnetv2_s=EfficientNetV2Options(width_multiplier=0.25, depth_multiplier=0.25))


def test_model_options_are_the_chosen_models_own():
    options = setup.model_options(SMALL, SHAPE)
    assert options["attention"] == "improved_cbam" and options["width_multiplier"] == 0.25
    plain = setup.model_options(replace(SMALL, name="plain_cnn", options={"plain_cnn": {"kernel_size": 5}}), SHAPE)
    assert plain == {"input_shape": SHAPE, "kernel_size": 5}  # the paper network's section is not its business
    with pytest.raises(ValueError, match=r"Model 'plain_cnn' has no option 'reduction' \(model.options.plain_cnn"):
        setup.model_options(ModelConfig(name="plain_cnn", options={"plain_cnn": {"reduction": 8}}), SHAPE)
    with pytest.raises(ValueError, match="Unknown model 'effnet'"):
        setup.model_options(ModelConfig(name="effnet"), SHAPE)
    with pytest.raises(ValueError, match="have their own section"):
        ModelConfig(options={"efficientnetv2_s": {"width_multiplier": 0.5}})


def test_settings_in_the_flat_layout_of_before_the_one_of_still_load():
    # Old config files and run directories named the paper network's options flat under `model`.
    paper = load_config("quick", None, ["model.width_multiplier=0.25", "model.options={stem_downsampling: max_pool}"])
    assert paper.model.efficientnetv2_s.width_multiplier == 0.25
    assert paper.model.efficientnetv2_s.stem_downsampling == "max_pool" and paper.model.options == {}
    # Another model then took the flat dropout_rate (every builder has one) and its own flat options.
    old = to_dict(preset("quick"))
    old["model"] = {"name": "plain_cnn", "attention": "improved_cbam", "width_multiplier": 1.0, "dropout_rate": 0.2,
                    "input_standardization": True, "options": {"kernel_size": 5}}
    cnn = config_from_json(json.dumps(old)).model
    assert cnn.builder_options() == {"dropout_rate": 0.2, "kernel_size": 5} and cnn.input_standardization


def small_model():
    return build("efficientnetv2_s", input_shape=SHAPE, **{k: v for k, v in setup.model_options(SMALL, SHAPE).items()
                                                          if k != "input_shape"})


def test_init_from_a_keras_file_and_a_run_directory(tmp_path):
    source = small_model()
    images = np.random.default_rng(0).random((2, *SHAPE), dtype=np.float32)
    (tmp_path / "run").mkdir()
    source.save(tmp_path / "run" / "best.keras")
    for where in (tmp_path / "run" / "best.keras", tmp_path / "run"):
        target = small_model()
        assert "weights of" in setup.initialize_from(target, str(where))
        np.testing.assert_array_equal(target.predict_on_batch(images), source.predict_on_batch(images))
    with pytest.raises(InitError, match="without best.keras or last.keras"):
        setup.initialize_from(small_model(), str(tmp_path))
    with pytest.raises(InitError, match="does not exist"):
        setup.initialize_from(small_model(), str(tmp_path / "nothing.keras"))


def test_init_from_a_run_that_trained_on_this_runs_val_or_test_recordings_is_refused(tmp_path):
    from pump_keras.data.index import ClipRecord
    from pump_keras.data.split import split_records, write_manifest

    def records(snr, seconds=40):
        return [ClipRecord(path=f"/d/{snr}_dB_pump/pump/id_00/{name}/{i:08d}.wav", label=label, machine="pump",
                           machine_id="00", snr_db=float(snr), clip_key=f"pump/id_00/{name}/{i:08d}")
                for label, name in ((0, "normal"), (1, "abnormal")) for i in range(seconds)]

    source = small_model()
    (tmp_path / "pretrain").mkdir()
    source.save(tmp_path / "pretrain" / "best.keras")
    write_manifest(tmp_path / "pretrain" / "split.csv", split_records(records(6), seed=0))
    same_seed = split_records(records(-6)[:-3], seed=0)
    target = small_model()
    assert "weights of" in setup.initialize_from(target, str(tmp_path / "pretrain"), same_seed)
    other_seed = split_records(records(-6), seed=1)
    with pytest.raises(InitError) as info:
        setup.initialize_from(target, str(tmp_path / "pretrain" / "best.keras"), other_seed)
    message = str(info.value)
    assert "recording(s) of this run's val/test splits were in the train/val splits" in message
    assert "pump/id_00/" in message and "here, train there" in message and "data.split_seed" in message


def test_init_from_keras_applications_weights_by_name(tmp_path):
    application = keras.applications.EfficientNetV2S(weights=None, include_top=False, input_shape=SHAPE)
    path = tmp_path / "efficientnetv2-s_notop.weights.h5"
    application.save_weights(path)
    ours = build("efficientnetv2_s", attention="se", input_shape=SHAPE)
    described = setup.initialize_from(ours, str(path))
    assert "layers loaded" in described
    np.testing.assert_array_equal(ours.get_layer("stem_conv").get_weights()[0],
                                  application.get_layer("stem_conv").get_weights()[0])
    with pytest.raises(InitError, match="cannot load it as keras.applications EfficientNetV2S"):
        setup.initialize_from(small_model(), str(path))


def test_reseed_makes_dropout_a_function_of_seed_and_epoch():
    inputs = keras.Input((1000,))
    model = keras.Model(inputs, keras.layers.Dropout(0.5)(inputs))
    ones = np.ones((1, 1000), "float32")
    draws = []
    for epoch in (3, 3, 4):
        setup.reseed(model, seed=7, epoch=epoch)
        draws.append(keras.ops.convert_to_numpy(model(ones, training=True)))
    np.testing.assert_array_equal(draws[0], draws[1])
    assert not np.array_equal(draws[0], draws[2])


def test_class_weights_balance_the_loss():
    labels = [0] * 8 + [1] * 2
    weights = recipe.class_weights(labels, "weights")
    assert weights == {0: 10 / 16, 1: 10 / 4}
    assert 8 * weights[0] == pytest.approx(2 * weights[1])
    assert recipe.class_weights(labels, "none") == {0: 1.0, 1: 1.0}
    with pytest.raises(ValueError, match="need both classes"):
        recipe.class_weights([0, 0], "weights")


def batches_of(epoch, alpha=0.2, labels=(0, 1) * 4, weights=None):
    labels = np.array(labels, "float32")
    images = np.random.default_rng(0).random((len(labels), 4, 4, 3), dtype=np.float32)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(len(labels))
    config = TrainConfig(mixup_alpha=alpha, seed=5)
    weights = weights or {0: 0.5, 1: 2.0}
    return list(recipe.training_batches(dataset, config, weights, epoch).as_numpy_iterator())[0]


def test_mixup_batches_are_seeded_per_epoch_and_weighted_by_mixed_labels():
    images, targets, weights = batches_of(epoch=1)
    assert targets.shape == (8, 1) and weights.shape == (8,)
    assert np.all((targets >= 0) & (targets <= 1)) and not np.all(np.isin(targets, [0.0, 1.0]))
    # The mixed label y gives weight 0.5 + 1.5 y and target 2 y / weight.
    mixed = (weights - 0.5) / 1.5
    np.testing.assert_allclose(targets[:, 0], 2.0 * mixed / weights, rtol=1e-5, atol=1e-6)
    again = batches_of(epoch=1)
    for a, b in zip((images, targets, weights), again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(targets, batches_of(epoch=2)[1])
    _, plain, plain_weights = batches_of(epoch=1, alpha=0.0)
    np.testing.assert_array_equal(plain[:, 0], [0, 1] * 4)
    np.testing.assert_array_equal(plain_weights, [0.5, 2.0] * 4)


def test_without_mixup_targets_stay_exactly_zero_or_one():
    # Class weights of a real split (173 clips, 56 abnormal): `low + (high -
    # low) * 1` rounds below `high` in float32, and a target of 0.99999994
    # made Keras' training accuracy count every abnormal clip as wrong.
    weights = recipe.class_weights([1] * 56 + [0] * 117, "weights")
    _, targets, sample_weights = batches_of(epoch=1, alpha=0.0, weights=weights)
    np.testing.assert_array_equal(targets[:, 0], [0, 1] * 4)
    np.testing.assert_array_equal(sample_weights, np.float32([weights[0], weights[1]] * 4))


def test_mixup_keeps_the_class_weighted_loss_balanced():
    # 11 % abnormal, as MIMII pump: both classes must keep equal loss mass under MixUp.
    labels = [1] * 7 + [0] * 57
    weights = recipe.class_weights(labels, "weights")
    # Keras' MixUp draws one lambda per clip, so the balance holds in expectation:
    # over 30 batches within 3 % (the old weighting gave about 0.80).
    abnormal_mass = normal_mass = 0.0
    for epoch in range(30):
        _, targets, sample_weights = batches_of(epoch=epoch, alpha=1.0, labels=labels, weights=weights)
        abnormal_mass += float(np.sum(sample_weights * targets[:, 0]))
        normal_mass += float(np.sum(sample_weights * (1.0 - targets[:, 0])))
    assert abnormal_mass / normal_mass == pytest.approx(1.0, abs=0.03)
    # And the loss of a mixed pair is the mix of the two clips' weighted losses,
    # label smoothing included (BCE is affine in the target).
    w0, w1, y = weights[0], weights[1], 0.3  # 30 % abnormal clip, 70 % normal clip
    weight = y * w1 + (1 - y) * w0
    loss = recipe.make_loss(TrainConfig(label_smoothing=0.1))
    logits = np.array([[-1.3], [0.2], [2.5]], "float32")

    def weighted(target, sample_weight):
        return float(loss(np.full_like(logits, target), logits, sample_weight=np.full((3,), sample_weight)))

    assert weighted(y * w1 / weight, weight) == pytest.approx(
        y * weighted(1.0, w1) + (1 - y) * weighted(0.0, w0), rel=1e-5)


def test_sgd_weight_decay_is_l2_through_the_momentum_like_pytorch():
    # PyTorch SGD(lr, momentum, weight_decay): b = mu b + (g + wd w); w -= lr b.
    lr, mu, wd = 0.1, 0.9, 0.01
    optimizer = SGDWithL2(learning_rate=lr, momentum=mu, l2=wd)
    variable = keras.Variable(np.array([1.0, -2.0], "float32"))
    optimizer.build([variable])
    w, buffer = np.array([1.0, -2.0]), np.zeros(2)
    for step in range(4):
        gradient = np.array([0.5, 0.25]) * (step + 1)
        optimizer.apply_gradients([(keras.ops.convert_to_tensor(gradient.astype("float32")), variable)])
        buffer = mu * buffer + gradient + wd * w
        w = w - lr * buffer
    np.testing.assert_allclose(keras.ops.convert_to_numpy(variable), w, rtol=1e-5)
    config = optimizer.get_config()
    assert config["l2"] == wd and SGDWithL2.from_config(config).l2 == wd
    with pytest.raises(ValueError, match="l2"):
        SGDWithL2(l2=-1.0)


def test_learning_rate_follows_the_cosine_from_initial_to_final():
    schedule = recipe.learning_rate_schedule(TrainConfig(epochs=10, learning_rate=0.01, final_learning_rate=0.001), 5)
    assert float(schedule(0)) == pytest.approx(0.01)
    assert float(schedule(25)) == pytest.approx(0.0055)
    assert float(schedule(50)) == pytest.approx(0.001)
    optimizer = recipe.make_optimizer(TrainConfig(), 3)
    assert isinstance(optimizer, SGDWithL2) and optimizer.momentum == 0.9
    assert optimizer.l2 == pytest.approx(1e-4) and not optimizer.weight_decay
    adamw = recipe.make_optimizer(TrainConfig(optimizer="adamw", weight_decay=0.05), 3)
    assert isinstance(adamw, keras.optimizers.AdamW) and adamw.weight_decay == pytest.approx(0.05)
    loss = recipe.make_loss(TrainConfig())
    assert loss.from_logits and loss.label_smoothing == 0.1



def test_warm_up_rises_linearly_then_the_cosine_runs_and_clipping_reaches_the_optimizer():
    config = TrainConfig(epochs=10, learning_rate=0.01, final_learning_rate=0.001, warmup_epochs=2)
    schedule = recipe.learning_rate_schedule(config, 5)  # 10 warm-up steps of 50
    assert float(schedule(0)) == pytest.approx(0.001)
    assert float(schedule(5)) == pytest.approx(0.0055)
    assert float(schedule(10)) == pytest.approx(0.01)
    assert float(schedule(30)) == pytest.approx(0.0055)
    assert float(schedule(50)) == pytest.approx(0.001)
    assert recipe.make_optimizer(TrainConfig(), 3).global_clipnorm is None
    for name in ("sgd", "adamw"):
        assert recipe.make_optimizer(TrainConfig(optimizer=name, gradient_clip_norm=2.0), 3).global_clipnorm == 2.0
    with pytest.raises(ValueError, match="warmup_epochs"):
        TrainConfig(warmup_epochs=-1)
    with pytest.raises(ValueError, match="gradient_clip_norm"):
        TrainConfig(gradient_clip_norm=0.0)

ALLOCATOR_PROBE = """
import hashlib, sys
import keras, numpy as np, tensorflow as tf
from pump_keras.config import TrainConfig
from pump_keras.models import build
from pump_keras.training import setup
setup.configure_runtime(TrainConfig(cpu_allocator=sys.argv[1], seed=0))
print("in use:", setup.cpu_allocator_in_use())
model = build("efficientnetv2_s", input_shape=(32, 32, 3), width_multiplier=0.25, depth_multiplier=0.25)
model.compile(optimizer="sgd", loss=keras.losses.BinaryCrossentropy(from_logits=True))
images = np.random.default_rng(0).uniform(0, 1, (4, 32, 32, 3)).astype("float32")
for _ in range(2):
    model.train_on_batch(images, np.array([[0.0], [1.0], [0.0], [1.0]], "float32"))
try:  # only a BFC allocator keeps statistics (others raise, or report zeros)
    print("peak", tf.config.experimental.get_memory_info("CPU:0")["peak"])
except ValueError as error:
    print("no statistics:", error)
print("weights", hashlib.md5(b"".join(np.asarray(w).tobytes() for w in model.weights)).hexdigest())
"""


def test_cpu_allocator_of_the_config_is_the_one_tensorflow_uses_and_changes_no_result():
    """Set by `configure_runtime` after `import tensorflow`, it still reaches the runtime; training is bit-identical."""
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    environment.pop(cpu_allocator.VARIABLE, None)
    digests = set()
    for allocator in ("bfc", "default"):
        result = subprocess.run([sys.executable, "-c", ALLOCATOR_PROBE, allocator], env=environment,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        assert f"in use: {allocator}" in result.stdout, result.stdout
        if allocator == "bfc":
            assert int(result.stdout.split("peak")[1].split()[0]) > 0, result.stdout
        else:  # TensorFlow's own allocator keeps no statistics: it raises, or reports zeros
            assert "no statistics" in result.stdout or "peak 0\n" in result.stdout, result.stdout
        digests.add(result.stdout.split("weights")[1].strip())
    assert len(digests) == 1, digests


def test_unknown_cpu_allocator_is_refused():
    with pytest.raises(ValueError, match="cpu_allocator must be one of"):
        TrainConfig(cpu_allocator="tcmalloc")


def test_mixed_precision_keeps_float32_logits_and_jit_compile_reaches_compile():
    try:
        setup.configure_runtime(TrainConfig(mixed_precision="bf16", deterministic=False))
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
        model = small_model()
        assert model.get_layer("block4a_improved_cbam").compute_dtype == "bfloat16"
        logits = model(np.zeros((1, *SHAPE), "float32"))
        assert keras.backend.standardize_dtype(logits.dtype) == "float32"
        # Keras itself turns XLA off while TensorFlow's op determinism is on (another
        # test may have enabled it in this process), so check what compile receives.
        received = {}
        compile_model = model.compile

        def spy(**kwargs):
            received.update(kwargs)
            return compile_model(**kwargs)

        model.compile = spy
        recipe.compile_model(model, TrainConfig(jit_compile=True), steps_per_epoch=1)
        assert received["jit_compile"] is True
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_time_roll_and_spec_augment_are_seeded_and_spare_the_frequency_channel():
    rng = np.random.default_rng(1)
    images = rng.random((6, 8, 10, 3), dtype=np.float32)
    images[..., 2] = np.linspace(1, 0, 8)[None, :, None]  # frequency position
    config = TrainConfig(time_roll=True, spec_augment_masks=1, spec_augment_width=0.3, seed=2)
    seed = tf.constant([4, 5], tf.int64)
    out = recipe.augment(tf.constant(images), seed, config, planes=2).numpy()
    again = recipe.augment(tf.constant(images), seed, config, planes=2).numpy()
    np.testing.assert_array_equal(out, again)
    np.testing.assert_array_equal(out[..., 2], images[..., 2])
    rolled = recipe.roll_time(tf.constant(images), seed).numpy()
    for b in range(6):  # a roll: the same columns, cyclically shifted
        shifts = [k for k in range(10) if np.array_equal(np.roll(images[b], k, axis=1), rolled[b])]
        assert len(shifts) == 1
    assert not all(np.array_equal(images[b], rolled[b]) for b in range(6))
    masked = recipe.spec_augment(tf.constant(images), seed, masks=1, max_fraction=0.3).numpy()
    mean = images.mean(axis=(1, 2), keepdims=True)
    changed = ~np.isclose(masked, images)
    assert changed.any() and np.allclose(masked[changed], np.broadcast_to(mean, images.shape)[changed])
    plain = recipe.augment(tf.constant(images), seed, TrainConfig(), planes=2).numpy()
    np.testing.assert_array_equal(plain, images)
    with pytest.raises(ValueError, match="spec_augment_width"):
        TrainConfig(spec_augment_width=0.0)


def test_pseudo_anomalies_change_one_band_of_chosen_normal_images_and_label_them_abnormal():
    rng = np.random.default_rng(3)
    images = (0.25 + 0.5 * rng.random((64, 20, 12, 2))).astype(np.float32)
    labels = np.zeros((64, 1), np.float32)
    labels[:16] = 1.0
    seed = tf.constant([7, 1], tf.int64)
    out, new_labels = recipe.pseudo_anomalies(tf.constant(images), tf.constant(labels), seed,
                                              fraction=0.5, strength=(1.0, 3.0), max_width=0.2)
    out, new_labels = out.numpy(), new_labels.numpy()
    again, _ = recipe.pseudo_anomalies(tf.constant(images), tf.constant(labels), seed, 0.5, (1.0, 3.0), 0.2)
    np.testing.assert_array_equal(out, again.numpy())
    changed = np.abs(out - images).max(axis=(1, 2, 3)) > 0
    made_up = (new_labels[:, 0] == 1) & (labels[:, 0] == 0)
    np.testing.assert_array_equal(changed, made_up)  # exactly the relabelled images changed
    assert 16 <= made_up.sum() <= 32 and (new_labels[:16] == 1).all()  # about half the normal ones
    assert out.min() >= 0.0 and out.max() <= 1.0
    for b in np.flatnonzero(made_up):
        difference = out[b] - images[b]
        rows = np.flatnonzero(np.abs(difference).max(axis=(1, 2)) > 0)
        assert 1 <= rows.size <= 4 and np.all(np.diff(rows) == 1)  # one band of at most 20 % of the rows
        band = difference[rows[0]]
        unclipped = (out[b, rows[0]] > 0.0) & (out[b, rows[0]] < 1.0) & (np.abs(band) > 1e-6)
        spread = images[b].std()
        assert np.all(np.abs(band) <= 3.0 * spread + 1e-5)
        assert np.all(np.abs(band[unclipped]) >= 1.0 * spread - 1e-5)
    none, same = recipe.pseudo_anomalies(tf.constant(images), tf.constant(labels), seed, 0.0, (1.0, 3.0), 0.2)
    np.testing.assert_array_equal(none.numpy(), images)
    np.testing.assert_array_equal(same.numpy(), labels)


def test_training_batches_make_pseudo_anomalies_only_on_the_feature_planes():
    images = np.full((8, 10, 6, 3), 0.5, np.float32)
    images[..., :2] += np.random.default_rng(0).normal(0, 0.05, (8, 10, 6, 2)).astype(np.float32)
    images[..., 2] = np.linspace(1, 0, 10)[None, :, None]
    dataset = tf.data.Dataset.from_tensor_slices((images, np.zeros(8, np.int64))).batch(8)
    config = TrainConfig(mixup_alpha=0, pseudo_anomaly_fraction=1.0, seed=1)
    (batch_images, batch_labels, _), = list(recipe.training_batches(
        dataset, config, {0: 1.0, 1: 1.0}, epoch=0, fixed_channels=1))
    np.testing.assert_array_equal(batch_images.numpy()[..., 2], images[..., 2])
    assert np.all(batch_labels.numpy() == 1.0)
    assert not np.allclose(batch_images.numpy()[..., :2], images[..., :2])
    for bad in ({"pseudo_anomaly_fraction": 1.5}, {"pseudo_anomaly_strength": (2.0, 1.0)},
                {"pseudo_anomaly_width": 0.0}):
        with pytest.raises(ValueError, match="pseudo_anomaly"):
            TrainConfig(**bad)
