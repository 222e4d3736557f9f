"""pump_keras.evaluation.plots: each figure is one atomic PNG, and the pictures say the right thing."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from matplotlib.figure import Figure

from pump_keras.evaluation import plots
from tests.conftest import REPO_ROOT

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_single_png(path):
    """`path` is a real PNG and the only file in its folder (no temporary file left)."""
    with open(path, "rb") as handle:
        payload = handle.read()
    assert payload.startswith(PNG_SIGNATURE)
    assert len(payload) > 1000
    assert os.listdir(os.path.dirname(path)) == [os.path.basename(path)]


@pytest.fixture
def clips():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], [30, 20])
    scores = rng.normal(size=50) + 1.5 * labels
    return labels, scores


def test_roc_marks_the_operating_point_and_shades_the_pauc_region(tmp_path, clips):
    labels, scores = clips
    path = str(tmp_path / "roc.png")
    figure = plots.plot_roc(labels, scores, 0.8, path, max_fpr=0.2, title="test ROC")
    assert isinstance(figure, Figure)
    assert_single_png(path)

    axis = figure.axes[0]
    predicted = scores >= 0.8
    point = next(line for line in axis.lines if line.get_marker() == "o")
    assert point.get_xdata()[0] == pytest.approx(predicted[labels == 0].mean())
    assert point.get_ydata()[0] == pytest.approx(predicted[labels == 1].mean())
    shaded = axis.collections[0].get_paths()[0].vertices
    assert shaded[:, 0].max() == pytest.approx(0.2)
    legend = [text.get_text() for text in axis.get_legend().get_texts()]
    assert any(text.startswith("ROC, AUC = ") for text in legend)
    assert any("pAUC (FPR ≤ 0.2)" in text for text in legend)


def test_roc_needs_both_classes(tmp_path):
    with pytest.raises(ValueError, match="both"):
        plots.plot_roc([0, 0, 0], [0.1, 0.2, 0.3], 0.5, str(tmp_path / "roc.png"))
    assert os.listdir(tmp_path) == []


def test_confusion_cells_hold_counts_and_row_percentages(tmp_path):
    labels = [0, 0, 0, 1, 1, 1]
    scores = [0.1, 0.2, 0.9, 0.8, 0.3, 0.7]  # tn 2, fp 1, fn 1, tp 2 at 0.5
    path = str(tmp_path / "confusion.png")
    figure = plots.plot_confusion(labels, scores, 0.5, path)
    assert_single_png(path)
    cells = {text.get_position(): text.get_text() for text in figure.axes[0].texts}
    assert cells == {(0, 0): "2\n66.7%", (1, 0): "1\n33.3%",  # (column, row)
                     (0, 1): "1\n33.3%", (1, 1): "2\n66.7%"}


def write_history(path, header, rows):
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(",".join(header) + "\n")
        for row in rows:
            handle.write(",".join(row) + "\n")


def panel_lines(figure):
    return [len(axis.lines) for axis in figure.axes]


def test_training_curves_draw_every_recorded_column(tmp_path):
    history = str(tmp_path / "history.csv")
    write_history(history, ["epoch", "auc", "learning_rate", "loss", "val_auc", "val_loss"],
                  [[str(e), "0.6", str(1e-3 / (e + 1)), "0.7", "0.55", "0.8"] for e in range(4)])
    path = str(tmp_path / "plots" / "curves.png")
    figure = plots.plot_training_curves(history, path)
    assert_single_png(path)
    assert panel_lines(figure) == [2, 2, 1]
    assert figure.axes[2].get_yscale() == "log"


def test_training_curves_cope_with_missing_columns(tmp_path):
    history = str(tmp_path / "history.csv")
    write_history(history, ["epoch", "loss", "val_loss", "lr"],
                  [["0", "0.9", "", "0.01"], ["1", "0.5", "", "0.005"]])
    path = str(tmp_path / "plots" / "curves.png")
    figure = plots.plot_training_curves(history, path)
    assert_single_png(path)
    assert panel_lines(figure) == [1, 0, 1]  # empty val_loss skipped, `lr` read as learning rate
    assert [text.get_text() for text in figure.axes[1].texts] == ["not recorded"]


def test_score_histograms_share_bins_and_show_the_threshold(tmp_path, clips):
    labels, scores = clips
    path = str(tmp_path / "scores.png")
    figure = plots.plot_score_histograms(labels, scores, 0.7, path)
    assert_single_png(path)
    axis = figure.axes[0]
    normal, abnormal = axis.containers
    assert sum(bar.get_height() for bar in normal) == 30
    assert sum(bar.get_height() for bar in abnormal) == 20
    assert [bar.get_x() for bar in normal] == [bar.get_x() for bar in abnormal]
    assert axis.lines[0].get_xdata()[0] == 0.7


def bottom_row_shown(image_artist):
    """The data row drawn at the bottom of the axes."""
    data = np.asarray(image_artist.get_array())
    return data[-1] if image_artist.origin == "upper" else data[0]


def test_spectrogram_examples_keep_low_frequencies_at_the_bottom(tmp_path):
    image = np.zeros((16, 24), np.float32)
    image[-1] = 1.0  # low frequency is the last row of a model image
    examples = [
        {"title": "a", "image": image, "machine_id": "id_00", "label": 0},
        {"title": "b", "image": image[..., np.newaxis], "machine_id": "id_00", "label": 1},
        {"title": "c", "image": image, "machine_id": "id_02", "label": 1},
    ]
    path = str(tmp_path / "examples.png")
    figure = plots.plot_spectrogram_examples(examples, path, db_range=(-80.0, 0.0))
    assert_single_png(path)

    drawn = [axis for axis in figure.axes if axis.images and axis.get_label() != "<colorbar>"]
    assert len(drawn) == 3
    for axis in drawn:
        assert np.all(bottom_row_shown(axis.images[0]) == 0.0)  # bright: 0 dB
        assert np.all(np.asarray(axis.images[0].get_array())[0] == -80.0)
    assert "no example" in [text.get_text() for axis in figure.axes for text in axis.texts]


def test_explanation_overlays_the_heatmap_at_image_size(tmp_path):
    image = np.random.default_rng(1).uniform(size=(32, 48, 3)).astype(np.float32)
    heatmap = np.zeros((4, 4), np.float32)
    heatmap[0, 0] = 1.0
    path = str(tmp_path / "explanation.png")
    figure = plots.plot_explanation(image, heatmap, path, title="clip 7")
    assert_single_png(path)
    overlay = np.asarray(figure.axes[1].images[1].get_array())
    assert overlay.shape == (32, 48)
    row, column = np.unravel_index(np.argmax(overlay), overlay.shape)
    assert row < 8 and column < 12
    assert overlay[-1, -1] == 0.0


def test_replotting_replaces_the_png(tmp_path, clips):
    labels, scores = clips
    path = str(tmp_path / "scores.png")
    plots.plot_score_histograms(labels, scores, 0.0, path)
    first = open(path, "rb").read()
    plots.plot_score_histograms(labels, scores, 1.0, path)
    assert open(path, "rb").read() != first
    assert_single_png(path)


def test_importing_plots_leaves_the_backend_alone():
    code = ("import matplotlib; matplotlib.use('svg'); import sys, pump_keras.evaluation.plots; "
            "assert matplotlib.get_backend() == 'svg', matplotlib.get_backend(); "
            "assert 'matplotlib.pyplot' not in sys.modules; "
            "assert 'tensorflow' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT)


def bright_patch_model(logit_sign=1.0):
    """Conv channel 0 fires on bright 3x3 patches, channel 1 (larger) on dark ones;
    the logit is `logit_sign` times the mean of channel 0 only."""
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(2, 3, strides=2, padding="same", name="conv")(inputs)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(1, name="logit")(x))
    kernel = np.zeros((3, 3, 3, 2), np.float32)
    kernel[..., 0], kernel[..., 1] = 1.0 / 27, -1.0 / 27
    model.get_layer("conv").set_weights([kernel, np.array([-0.5, 1.0], np.float32)])
    model.get_layer("logit").set_weights([np.array([[logit_sign], [0.0]], np.float32),
                                          np.zeros(1, np.float32)])
    return model


@pytest.fixture(scope="module")
def patch_image():
    image = np.zeros((16, 16, 3), np.float32)
    image[:6, :6] = 1.0  # top-left
    return image


def test_grad_cam_highlights_the_patch_that_drives_the_logit(patch_image):
    model = bright_patch_model()
    heatmap = plots.grad_cam(model, patch_image)  # default: the last 4-D layer, "relu"
    assert heatmap.shape == (8, 8)  # the conv output, not the image
    assert heatmap.min() >= 0.0 and heatmap.max() == pytest.approx(1.0)
    row, column = np.unravel_index(np.argmax(heatmap), heatmap.shape)
    assert row < 4 and column < 4
    assert np.all(heatmap[4:, 4:] == 0.0)
    np.testing.assert_allclose(plots.grad_cam(model, patch_image, layer_name="relu"), heatmap)
    before_relu = plots.grad_cam(model, patch_image, layer_name="conv")
    assert np.unravel_index(np.argmax(before_relu), (8, 8))[0] < 4


def test_grad_cam_is_zero_when_nothing_raises_the_logit(patch_image):
    heatmap = plots.grad_cam(bright_patch_model(logit_sign=-1.0), patch_image)
    assert heatmap.shape == (8, 8)
    assert np.all(heatmap == 0.0)


def test_grad_cam_refuses_what_it_cannot_explain(patch_image):
    inputs = keras.Input((16, 16, 3))
    inner = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(2, 3),
                              keras.layers.GlobalAveragePooling2D()], name="backbone")
    nested = keras.Model(inputs, keras.layers.Dense(1)(inner(inputs)))
    with pytest.raises(ValueError, match="nested model"):
        plots.grad_cam(nested, patch_image)
    with pytest.raises(ValueError, match=r"\[H, W, C\]"):
        plots.grad_cam(bright_patch_model(), patch_image[..., 0])
