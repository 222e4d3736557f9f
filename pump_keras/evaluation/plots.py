"""Figures of a run: ROC, confusion matrix, training curves, score histograms,
spectrogram examples and Grad-CAM explanations.

Every `plot_*` function writes one PNG atomically (rendered in memory, then a
temporary file in the same folder and a rename) and returns the
`matplotlib.figure.Figure`, so a notebook can show it. Figures are drawn on
their own Agg canvas, never through pyplot, so importing this module leaves
a notebook's chosen backend alone. Labels are 0 (normal) / 1 (abnormal) and a
clip is predicted abnormal when `score >= threshold`, as in `pump_keras.evaluation.metrics`.

Spectrogram images are the model's images: row 0 is the highest frequency and
the last row the lowest (`pump_keras.audio.features.feature_to_image`), so they are
drawn with `origin="upper"`, which puts low frequencies at the bottom.

`grad_cam` needs TensorFlow (imported when called); the plots need only
NumPy, SciPy, scikit-learn and matplotlib.
"""

from __future__ import annotations

import csv
import io
import math
from typing import Optional, Sequence, Tuple

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from scipy import ndimage
from sklearn import metrics as sk_metrics

from pump_keras.evaluation.metrics import DEFAULT_MAX_FPR, confusion, partial_auc, roc_auc
from pump_keras.files import atomic_write_bytes

DPI = 100
CLASS_NAMES = ("normal", "abnormal")
SPECTROGRAM_CMAP = "magma"
HEATMAP_CMAP = "jet"
HEATMAP_ALPHA = 0.45
HISTORY_PANELS = (  # (title, ((column, legend label), ...))
    ("loss", (("loss", "train"), ("val_loss", "validation"))),
    ("AUC", (("auc", "train"), ("val_auc", "validation"))),
    ("learning rate", (("learning_rate", "learning rate"),)),
)


def _new_figure(width: float, height: float) -> Figure:
    """A figure on its own Agg canvas (no pyplot, no global backend change)."""
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: str) -> Figure:
    """Renders `figure` to PNG and writes it to `path` atomically; returns the figure."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    atomic_write_bytes(path, buffer.getvalue())
    return figure


def _labels_scores(labels, scores) -> Tuple[np.ndarray, np.ndarray]:
    """Validated 1-D labels (0/1) and finite scores of equal length."""
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.ndim != 1 or scores.shape != labels.shape:
        raise ValueError(f"labels and scores must be 1-D of equal length; "
                         f"got shapes {labels.shape} and {scores.shape}.")
    if labels.size == 0 or not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be a non-empty array of 0 (normal) and 1 (abnormal).")
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite; found NaN or infinity.")
    return labels.astype(np.int64), scores


def _plane(image) -> np.ndarray:
    """A spectrogram image as a 2-D float array: `[H, W]`, or channel 0 of `[H, W, C]`."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3:
        image = image[..., 0]
    if image.ndim != 2:
        raise ValueError(f"an image must be [H, W] or [H, W, C]; got shape {image.shape}.")
    return image


def plot_roc(labels, scores, threshold: float, path: str,
             max_fpr: float = DEFAULT_MAX_FPR, title: Optional[str] = None) -> Figure:
    """ROC curve with AUC, the pAUC region FPR <= max_fpr shaded and the operating point."""
    labels, scores = _labels_scores(labels, scores)
    if not 0 < labels.sum() < labels.size:
        raise ValueError("a ROC curve needs both normal and abnormal clips.")
    fpr, tpr, _ = sk_metrics.roc_curve(labels, scores)
    predicted = scores >= threshold
    point_fpr = float(predicted[labels == 0].mean())
    point_tpr = float(predicted[labels == 1].mean())

    figure = _new_figure(5.0, 4.6)
    axis = figure.add_subplot()
    region = np.linspace(0.0, max_fpr, 200)
    pauc = partial_auc(labels, scores, max_fpr)
    axis.fill_between(region, np.interp(region, fpr, tpr), color="tab:blue", alpha=0.2,
                      label=f"pAUC (FPR ≤ {max_fpr:g}) = {pauc:.3f}")
    axis.plot(fpr, tpr, color="tab:blue", lw=2, label=f"ROC, AUC = {roc_auc(labels, scores):.3f}")
    axis.plot([0, 1], [0, 1], color="gray", ls="--", lw=1, label="chance")
    axis.plot(point_fpr, point_tpr, "o", color="tab:red", ms=8,
              label=f"threshold {threshold:.3g}")
    axis.annotate(f"TPR {point_tpr:.2f}\nFPR {point_fpr:.2f}", (point_fpr, point_tpr),
                  xytext=(12, -28), textcoords="offset points", color="tab:red")
    axis.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="false positive rate (normal flagged)",
             ylabel="true positive rate (abnormal caught)", title=title or "ROC")
    axis.set_aspect("equal")
    axis.legend(loc="lower right", fontsize="small")
    return _save(figure, path)


def plot_confusion(labels, scores, threshold: float, path: str) -> Figure:
    """2x2 confusion matrix (rows true, columns predicted) with counts and row percentages."""
    labels, scores = _labels_scores(labels, scores)
    counts = confusion(labels, (scores >= threshold).astype(np.int64))
    matrix = np.array([[counts["tn"], counts["fp"]], [counts["fn"], counts["tp"]]])
    totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)

    figure = _new_figure(4.2, 3.8)
    axis = figure.add_subplot()
    axis.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    for row in range(2):
        for column in range(2):
            axis.text(column, row, f"{matrix[row, column]}\n{100 * shares[row, column]:.1f}%",
                      ha="center", va="center", fontsize="large",
                      color="white" if shares[row, column] > 0.5 else "black")
    axis.set(xticks=[0, 1], yticks=[0, 1], xticklabels=CLASS_NAMES, yticklabels=CLASS_NAMES,
             xlabel="predicted", ylabel="true", title=f"confusion at threshold {threshold:.3g}")
    return _save(figure, path)


def _read_history(history_csv: str) -> dict:
    """A history CSV's columns as float arrays (empty cells NaN, `lr` read as `learning_rate`)."""
    with open(history_csv, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    columns = {name for row in rows for name in row if name}

    def number(text) -> float:
        return float(text) if text not in (None, "") else math.nan

    history = {name: np.array([number(row.get(name)) for row in rows]) for name in columns}
    if "lr" in history:  # older Keras
        history.setdefault("learning_rate", history.pop("lr"))
    return history


def plot_training_curves(history_csv: str, path: str) -> Figure:
    """Loss, AUC and learning-rate panels from a Keras-style history CSV (columns may be missing)."""
    history = _read_history(history_csv)
    length = max((len(values) for values in history.values()), default=0)
    epochs = history.get("epoch", np.arange(length))

    figure = _new_figure(11.0, 3.4)
    for axis, (title, series) in zip(figure.subplots(1, len(HISTORY_PANELS)), HISTORY_PANELS):
        drawn = False
        for column, label in series:
            values = history.get(column)
            if values is None or np.isnan(values).all():
                continue
            axis.plot(epochs, values, marker=".", label=label)
            drawn = True
            if title == "learning rate" and np.nanmin(values) > 0:
                axis.set_yscale("log")
        if drawn:
            axis.legend(fontsize="small")
        else:
            axis.text(0.5, 0.5, "not recorded", ha="center", va="center",
                      transform=axis.transAxes, color="gray")
        axis.set(title=title, xlabel="epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
    return _save(figure, path)


def plot_score_histograms(labels, scores, threshold: float, path: str) -> Figure:
    """Anomaly-score histograms of normal and abnormal clips on shared bins, with the threshold."""
    labels, scores = _labels_scores(labels, scores)
    bins = np.histogram_bin_edges(np.append(scores, threshold), bins=30)

    figure = _new_figure(6.0, 3.6)
    axis = figure.add_subplot()
    for label, color in ((0, "tab:blue"), (1, "tab:red")):
        chosen = scores[labels == label]
        axis.hist(chosen, bins=bins, alpha=0.5, color=color,
                  label=f"{CLASS_NAMES[label]} ({chosen.size})")
    axis.axvline(threshold, color="black", ls="--", label=f"threshold {threshold:.3g}")
    axis.set(xlabel="anomaly score", ylabel="clips", title="anomaly scores by class")
    axis.legend(fontsize="small")
    return _save(figure, path)


def plot_spectrogram_examples(examples: Sequence[dict], path: str,
                              db_range: Optional[Tuple[float, float]] = None) -> Figure:
    """Grid of model images: one row per machine id, columns normal / abnormal.

    Each example is {"title", "image" ([H, W] in [0, 1], low frequency in the
    last row), "machine_id", "label"}; the first example of each cell is shown.
    With `db_range=(low, high)` the colour bar reads in dB instead of [0, 1].
    """
    cells = {}
    for example in examples:
        if example["label"] not in (0, 1):
            raise ValueError(f"an example's label must be 0 or 1; got {example['label']!r}.")
        cells.setdefault((str(example["machine_id"]), int(example["label"])), example)
    if not cells:
        raise ValueError("no examples to plot.")
    machine_ids = sorted({machine_id for machine_id, _ in cells})
    low, high = (0.0, 1.0) if db_range is None else (float(db_range[0]), float(db_range[1]))

    figure = _new_figure(7.0, 2.6 * len(machine_ids) + 0.4)
    axes = figure.subplots(len(machine_ids), 2, squeeze=False)
    shown = None
    for row, machine_id in enumerate(machine_ids):
        for label in (0, 1):
            axis = axes[row, label]
            axis.set_xticks([])
            axis.set_yticks([])
            example = cells.get((machine_id, label))
            if example is None:
                axis.text(0.5, 0.5, "no example", ha="center", va="center",
                          transform=axis.transAxes, color="gray")
            else:
                values = low + _plane(example["image"]) * (high - low)
                shown = axis.imshow(values, origin="upper", aspect="auto",
                                    cmap=SPECTROGRAM_CMAP, vmin=low, vmax=high)
            lines = [CLASS_NAMES[label]] if row == 0 else []
            lines += [example.get("title", "")] if example is not None else []
            axis.set_title("\n".join(lines), fontsize="small")
            if label == 0:
                axis.set_ylabel(f"{machine_id}\nfrequency ↑", fontsize="small")
            if row == len(machine_ids) - 1:
                axis.set_xlabel("time →", fontsize="small")
    if shown is not None:
        figure.colorbar(shown, ax=axes, shrink=0.8, label="dB" if db_range else "image value")
    return _save(figure, path)


def _resize(heatmap: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a 2-D heatmap to `shape`, pixel edges aligned."""
    factors = (shape[0] / heatmap.shape[0], shape[1] / heatmap.shape[1])
    return ndimage.zoom(heatmap, factors, order=1, mode="nearest", grid_mode=True)


def plot_explanation(image, heatmap, path: str, title: Optional[str] = None) -> Figure:
    """The spectrogram image beside the same image with a heatmap (any size) overlaid."""
    image = _plane(image)
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if heatmap.ndim != 2:
        raise ValueError(f"heatmap must be 2-D; got shape {heatmap.shape}.")
    overlay = _resize(heatmap, image.shape)

    figure = _new_figure(8.0, 4.0)
    left, right = figure.subplots(1, 2)
    for axis in (left, right):
        axis.imshow(image, origin="upper", aspect="auto", cmap="gray", vmin=0.0, vmax=1.0)
        axis.set(xticks=[], yticks=[], xlabel="time →")
    left.set(title="spectrogram image", ylabel="frequency (low at bottom)")
    shown = right.imshow(overlay, origin="upper", aspect="auto", cmap=HEATMAP_CMAP,
                         alpha=HEATMAP_ALPHA)
    right.set_title("explanation")
    figure.colorbar(shown, ax=right, shrink=0.8)
    if title:
        figure.suptitle(title)
    return _save(figure, path)


def _last_spatial_layer(model):
    """The last layer of `model`'s own graph whose output is 4-D `[batch, H, W, C]`."""
    import keras

    for layer in reversed(model.layers):
        if isinstance(layer, keras.layers.InputLayer):
            break
        if len(layer.output.shape) == 4:
            return layer
        if isinstance(layer, keras.Model):
            raise ValueError(
                f"layer {layer.name!r} is a nested model with a {len(layer.output.shape)}-D "
                "output; grad_cam needs a 4-D layer of the model's own graph (pass layer_name).")
    raise ValueError(f"model {model.name!r} has no layer with a 4-D output to explain.")


def grad_cam(model, image, layer_name: Optional[str] = None) -> np.ndarray:
    """Grad-CAM heatmap in [0, 1] of one image for a functional model with one logit.

    `image` is the model input `[H, W, C]`. The heatmap has the spatial shape
    of `layer_name`'s output (default: the last 4-D layer, e.g.
    `top_activation`): ReLU of the channels weighted by the spatial mean of
    the logit's gradient, divided by its maximum (all zeros if nothing
    raises the logit).
    """
    import keras
    import tensorflow as tf

    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3:
        raise ValueError(f"image must be one [H, W, C] model input; got shape {image.shape}.")
    if len(model.outputs) != 1 or model.outputs[0].shape[-1] != 1:
        raise ValueError("grad_cam needs a model with one output holding one logit.")
    layer = model.get_layer(layer_name) if layer_name else _last_spatial_layer(model)
    if len(layer.output.shape) != 4:
        raise ValueError(f"layer {layer.name!r} has output shape {layer.output.shape}; need 4-D.")

    probe = keras.Model(model.inputs, [layer.output, model.outputs[0]])
    with tf.GradientTape() as tape:
        activations, logits = probe(tf.constant(image[np.newaxis]), training=False)
        logit = tf.reduce_sum(tf.cast(logits, tf.float32))
    gradients = tf.cast(tape.gradient(logit, activations), tf.float32)
    activations = tf.cast(activations, tf.float32)
    weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
    heatmap = tf.nn.relu(tf.reduce_sum(activations * weights, axis=-1))[0].numpy()
    peak = heatmap.max()
    return heatmap / peak if peak > 0 else np.zeros_like(heatmap)
