"""Our normal-only method: learn to tell machines apart from normal clips, score how badly a clip fits its own.

The run's image backbone (`model`, e.g. the improved-CBAM EfficientNetV2)
gets an embedding (Dense + BatchNorm on its pooled features, where its logit
was) and an ArcFace head (`pump_keras.layers.angular_margin`) over the
training split's machines (`normal_only.classes`). It is trained on normal
clips only, with the run's optimizer, schedule and time roll, MixUp on the
one-hot classes when `train.mixup_alpha` is set. A clip's anomaly score
(`normal_only.score`) is how far the time statistics of the backbone's
stride-4 feature map lie from those of its machine's training clips (a
diagonal Gaussian per machine, `feature_gaussian`), the mean cosine distance
from its embedding to the k nearest embeddings of its machine's training
clips (`knn`), or `-log p(own class)` under the head (`neg_log_prob`).
Each machine's threshold and the test metrics come from
`pump_keras.training.normal_only`.

Files: `best.keras` (the classifier, label input included), `embedder.keras`
(images to embeddings), `reference_embeddings.npz` (the training clips'
embeddings and machines: what "k nearest" searches) and, for
`feature_gaussian`, `feature_statistics.npz` (each machine's feature mean
and scale). Training resumes from the last completed epoch
(`keras.callbacks.BackupAndRestore` under `backup/`).
"""

from __future__ import annotations

import io
import json
from typing import Callable, Dict, List, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from pump_keras.config import RunConfig
from pump_keras.data.index import machine_group
from pump_keras.data.pipeline import make_dataset
from pump_keras.errors import TrainingError
from pump_keras.files import atomic_write_bytes
from pump_keras.layers.angular_margin import ArcMarginLogits, OwnClassesLogit, l2_normalize
from pump_keras.layers.feature_statistics import (
    GaussianDistanceLogit, TimeStatistics, machine_distances, machine_statistics)
from pump_keras.layers.reference_distance import ReferenceDistanceLogit
from pump_keras.layers.standardization import with_row_standardization
from pump_keras.models import build, load_model
from pump_keras.run_dir import RunDirectory
from pump_keras.training import normal_only, recipe, setup
from pump_keras.training.normal_only import write_outputs

SCORE_NAMES = {"knn": "cosine distance to the nearest training embeddings of the clip's machine",
               "neg_log_prob": "-log p(own machine) under the ArcFace head",
               "feature_gaussian": "mean squared z-score of the feature map's time statistics under the machine's "
                                   "normal ones"}
EMBEDDER = "embedder.keras"
REFERENCES = "reference_embeddings.npz"
FEATURE_STATISTICS = "feature_statistics.npz"
BACKUP = "backup"


def class_name(record, classes: str) -> str:
    """The head's class of a clip: its machine, plus domain and attributes with `"machine_attributes"`."""
    name = machine_group(record)
    if classes == "machine_attributes" and (record.domain or record.attributes):
        name += f"/{record.domain or '-'}/{record.attributes}"
    return name


def build_id_classifier(config: RunConfig, classes: int):
    """`(classifier, embedder)`: images and labels to ArcFace logits, and images to embeddings.

    The embedding replaces the backbone's logit: a Dense layer and a
    BatchNorm on what the logit read (the pooled features, after dropout).
    """
    backbone = build(config.model.name, **setup.model_options(config.model, config.features.input_shape))
    pooled = backbone.get_layer("logit").input
    x = keras.layers.Dense(config.normal_only.embedding_dim, name="embedding")(pooled)
    embedding = keras.layers.BatchNormalization(name="embedding_bn", dtype="float32")(x)
    embedder = keras.Model(backbone.input, embedding, name="embedder")
    if config.model.input_standardization:
        embedder = with_row_standardization(embedder)
    labels = keras.Input(shape=(), dtype="int32", name="labels")
    logits = ArcMarginLogits(classes, config.normal_only.scale, config.normal_only.margin, name="arcface")(
        embedder.output, labels)
    return keras.Model([embedder.input, labels], logits, name="id_classifier"), embedder


def split_images(records: Sequence, config: RunConfig, data_config, cache_dir: str, name: str) -> np.ndarray:
    """Every clip's backbone image, in record order, as one array (the splits here are a few hundred clips)."""
    dataset = make_dataset(records, config.features, data_config, training=False, cache_dir=cache_dir, name=name)
    return np.concatenate([images.numpy() for images, _ in dataset])


def training_batches(images: np.ndarray, class_ids: np.ndarray, classes: int, config: RunConfig) -> tf.data.Dataset:
    """Shuffled batches `((images, labels), one-hot targets)`, rolled in time and mixed as the recipe says."""
    seed = config.train.seed
    dataset = tf.data.Dataset.from_tensor_slices((images, class_ids.astype(np.int32)))
    dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True).repeat()
    dataset = dataset.batch(config.data.batch_size, drop_remainder=len(images) >= config.data.batch_size)
    alpha = config.train.mixup_alpha

    def augment(step, batch):
        batch_images, batch_ids = batch
        targets = tf.one_hot(batch_ids, classes)
        if config.train.time_roll:
            batch_images = recipe.roll_time(batch_images, tf.stack([tf.cast(seed, tf.int64), step]))
        if alpha:
            # MixUp on the one-hot classes; the ArcFace margin goes to the larger share's class.
            weights = tf.random.stateless_gamma([tf.shape(batch_ids)[0], 2], tf.stack([step, tf.cast(seed, tf.int64)]),
                                                alpha=alpha)
            lam = weights[:, :1] / tf.reduce_sum(weights, axis=1, keepdims=True)
            order = tf.reverse(tf.range(tf.shape(batch_ids)[0]), [0])
            batch_images = (lam[:, :, None, None] * batch_images
                            + (1 - lam[:, :, None, None]) * tf.gather(batch_images, order))
            targets = lam * targets + (1 - lam) * tf.gather(targets, order)
            batch_ids = tf.argmax(targets, axis=1, output_type=tf.int32)
        return (batch_images, batch_ids), targets

    return dataset.enumerate().map(augment).prefetch(2)


def feature_layer(model: keras.Model, stride: int):
    """The deepest layer of `model` whose output is a feature map with the input's rows divided by `stride`.

    Raises:
        TrainingError: no layer has such an output (the backbone does not
            downsample by `stride`).
    """
    rows = model.input_shape[1]
    found = None
    for layer in model.layers:
        shape = getattr(layer, "output", None) is not None and layer.output.shape
        if shape and len(shape) == 4 and rows is not None and shape[1] * stride == rows:
            found = layer
    if found is None:
        raise TrainingError(f"{model.name} has no feature map at stride {stride} of its {rows} input rows; "
                            "choose another normal_only.feature_stride.")
    return found


def feature_model(embedder: keras.Model, stride: int) -> keras.Model:
    """Images to the time statistics (`TimeStatistics`) of the embedder's feature map at `stride`."""
    return keras.Model(embedder.input, TimeStatistics(name="time_statistics")(
        feature_layer(embedder, stride).output), name="feature_statistics")


def knn_scores(embeddings: np.ndarray, references: np.ndarray, k: int) -> np.ndarray:
    """The mean cosine distance of each embedding to its `k` nearest `references`."""
    cosine = keras.ops.convert_to_numpy(keras.ops.matmul(l2_normalize(embeddings), keras.ops.transpose(
        l2_normalize(references))))
    nearest = np.sort(1.0 - cosine, axis=1)[:, :min(k, len(references))]
    return nearest.mean(axis=1).astype(np.float64)


def neg_log_prob_scores(logits: np.ndarray, class_names: Sequence[str], machines: Sequence[str]) -> np.ndarray:
    """`-log p(own machine)` per clip: the softmax of `logits` summed over the classes of the clip's machine.

    A class name starts with its machine ("pump/id_00", then "/domain/attributes"
    with `classes="machine_attributes"`), so a clip of an attribute never
    trained on is still scored against its machine.
    """
    shifted = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    owner = np.array(["/".join(name.split("/")[:2]) for name in class_names])
    own = np.array([probs[i, owner == machine].sum() for i, machine in enumerate(machines)])
    return -np.log(np.maximum(own, 1e-30)).astype(np.float64)


def check_machines(splits: dict, classes: str) -> None:
    """Raises unless training has two classes or more, and every test clip's machine has training clips."""
    class_names = sorted({class_name(r, classes) for r in splits["train"]})
    if len(class_names) < 2:
        raise TrainingError(f"The training split holds one machine ({class_names[0]}): telling machines apart "
                            "needs at least two (add recordings of another machine or id, or use the "
                            "dcase2020_ae preset, which models each machine alone).")
    unknown = sorted({machine_group(r) for r in splits["test"]} - {machine_group(r) for r in splits["train"]})
    if unknown:
        raise TrainingError(f"Test clips of {', '.join(unknown)}, which has no training clips: a clip is scored "
                            "against its own machine's normal sounds.")


def train_id_embedding(config: RunConfig, synthetic_data_dir: Callable, log: Callable[[str], None] = print):
    """Runs (or resumes) the run of `config`; returns `(metrics, files, epochs run now)`."""
    normal_only.check_config(config)
    run, data_config, splits, groups, _ = normal_only.prepare_run(
        config, synthetic_data_dir, log, check_splits=lambda splits: check_machines(splits, config.normal_only.classes))
    class_names = sorted({class_name(r, config.normal_only.classes) for r in splits["train"]})
    cache_dir = run.file(RunDirectory.CACHE)
    images = {name: split_images(splits[name], config, data_config, cache_dir, name) for name in splits if splits[name]}
    class_ids = np.array([class_names.index(class_name(r, config.normal_only.classes)) for r in splits["train"]])
    keras.utils.set_random_seed(config.train.seed)  # the initial weights, then dropout and MixUp
    classifier, embedder = build_id_classifier(config, len(class_names))
    previous = _previous_history(run)
    if len(previous) >= config.train.epochs and run.exists(RunDirectory.BEST):
        log(f"{run.file(RunDirectory.BEST)} holds all {config.train.epochs} epochs; not trained again.")
        classifier.load_weights(run.file(RunDirectory.BEST))
    else:
        if setup.fit_input_statistics(classifier, (images["train"][i:i + 64] for i in range(0, len(class_ids), 64))):
            log("Input standardisation fitted on the training split.")
        _fit(classifier, images["train"], class_ids, len(class_names), config, run, previous, log)
        run.save_model(classifier, RunDirectory.BEST)
    run.save_model(embedder, EMBEDDER)
    embeddings = {name: embedder.predict(images[name], batch_size=config.data.batch_size, verbose=0)
                  for name in images}
    _write_references(run, embeddings["train"], splits["train"])
    vectors, statistics = embeddings, None  # what the score compares; the machines' normal statistics
    if config.normal_only.score == "feature_gaussian":
        # From the saved embedder, as export builds it (a freshly built one can hold a layer called twice).
        features = feature_model(load_model(run.file(EMBEDDER)), config.normal_only.feature_stride)
        vectors = {name: features.predict(images[name], batch_size=config.data.batch_size, verbose=0)
                   for name in images}
        statistics = machine_statistics(vectors["train"], [machine_group(r) for r in splits["train"]])
        _write_feature_statistics(run, statistics)
    scores = {name: _scores(config, classifier, vectors, splits, name, class_names, statistics)
              for name in ("val", "test")}
    result = write_outputs(run, config, groups, scores, SCORE_NAMES[config.normal_only.score])
    result["classes"] = class_names
    run.write_json(RunDirectory.METRICS, result)
    files = {name: run.file(name) for name in (
        RunDirectory.CONFIG, RunDirectory.MANIFEST, RunDirectory.BEST, EMBEDDER, REFERENCES, RunDirectory.HISTORY,
        RunDirectory.METRICS, RunDirectory.THRESHOLD, RunDirectory.DCASE_RESULTS)}
    if config.normal_only.score == "feature_gaussian":
        files[FEATURE_STATISTICS] = run.file(FEATURE_STATISTICS)
    return result, files, max(0, config.train.epochs - len(previous))


def machine_scorer(run_dir: str, machine: Optional[str] = None):
    """`(model, machine)`: images to one logit per clip scoring it against `machine`'s normal training clips.

    The logit is `(score - threshold) / spread` (`ReferenceDistanceLogit`
    for `knn`, `GaussianDistanceLogit` for `feature_gaussian`,
    `OwnClassesLogit` on the ArcFace head for `neg_log_prob`): positive
    above the machine's threshold (`threshold.json`), in units of the spread
    of its normal validation scores. `machine` may be omitted when the run
    has one.

    Raises:
        TrainingError: the run is not a finished run of this method, or
            `machine` is not one of its machines.
    """
    run = RunDirectory(run_dir)
    config = run.read_config()
    score = config.normal_only.score
    needed = {"knn": REFERENCES, "feature_gaussian": FEATURE_STATISTICS, "neg_log_prob": RunDirectory.METRICS}[score]
    for name in (EMBEDDER, RunDirectory.BEST, needed):
        if not run.exists(name):
            raise TrainingError(f"{run_dir} holds no {name}: train it first (python -m pump_keras.train).")
    machine, entry = normal_only.machine_threshold(run_dir, machine)
    threshold, spread = entry["threshold_score"], max(entry.get("val_score_std", 1.0), 1e-6)
    embedder = load_model(run.file(EMBEDDER))
    if score == "neg_log_prob":
        trained = load_model(run.file(RunDirectory.BEST)).get_layer("arcface")
        arcface = ArcMarginLogits.from_config(trained.get_config())
        logits = arcface(embedder.output)
        arcface.set_weights(trained.get_weights())
        with open(run.file(RunDirectory.METRICS), encoding="utf-8") as handle:
            owners = ["/".join(name.split("/")[:2]) for name in json.load(handle)["classes"]]
        head = OwnClassesLogit([int(owner == machine) for owner in owners], threshold, spread, name="own_classes")
        return keras.Model(embedder.input, head(logits), name="normal_only_scorer"), machine
    stored = np.load(run.file(needed))
    own = stored["machines"] == machine
    if score == "knn":
        head = ReferenceDistanceLogit(int(own.sum()), config.normal_only.k, threshold, spread,
                                      name="reference_distance")
        head.set_references(stored["embeddings"][own])
        return keras.Model(embedder.input, head(embedder.output), name="normal_only_scorer"), machine
    features = feature_model(embedder, config.normal_only.feature_stride)
    head = GaussianDistanceLogit(threshold, spread, name="gaussian_distance")
    head.set_statistics(stored["mean"][own][0], stored["scale"][own][0])
    return keras.Model(features.input, head(features.output), name="normal_only_scorer"), machine


def _fit(classifier, images: np.ndarray, class_ids: np.ndarray, classes: int, config: RunConfig,
         run: RunDirectory, previous: List[dict], log: Callable[[str], None]) -> None:
    """Trains `classifier`, resuming from `backup/`; `previous` is the history already written."""
    steps = max(1, len(images) // config.data.batch_size)
    classifier.compile(optimizer=recipe.make_optimizer(config.train, steps),
                       loss=keras.losses.CategoricalCrossentropy(from_logits=True,
                                                                 label_smoothing=config.train.label_smoothing),
                       metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
                       jit_compile=config.train.jit_compile)
    backup = keras.callbacks.BackupAndRestore(run.file(BACKUP))
    rows = {row["epoch"]: row for row in previous}

    class _History(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            rows[epoch + 1] = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
            run.write_history([rows[e] for e in sorted(rows)])

    log(f"Learning {classes} machine classes from {len(images)} normal clips ({config.train.epochs} epochs)...")
    classifier.fit(training_batches(images, class_ids, classes, config), steps_per_epoch=steps,
                   epochs=config.train.epochs, callbacks=[backup, _History()], verbose=config.train.verbose)


def _previous_history(run: RunDirectory) -> List[dict]:
    """The rows of `history.csv` written before this process started (a resumed run), else none."""
    return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()} for row in run.read_history()]


def _write_feature_statistics(run: RunDirectory, statistics: dict) -> None:
    """Each training machine's normal feature mean and scale (`machine_statistics`), for export."""
    names = sorted(statistics)
    buffer = io.BytesIO()
    np.savez(buffer, machines=np.array(names), mean=np.stack([statistics[n][0] for n in names]),
             scale=np.stack([statistics[n][1] for n in names]))
    atomic_write_bytes(run.file(FEATURE_STATISTICS), buffer.getvalue())


def _write_references(run: RunDirectory, embeddings: np.ndarray, records: Sequence) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, embeddings=embeddings.astype(np.float32),
             machines=np.array([machine_group(r) for r in records]))
    atomic_write_bytes(run.file(REFERENCES), buffer.getvalue())


def _scores(config: RunConfig, classifier, vectors: Dict[str, np.ndarray], splits: dict, name: str,
            class_names: List[str], statistics: Optional[dict] = None) -> Dict[str, np.ndarray]:
    """`{machine: scores}` of split `name`, in the order of `by_group`.

    `vectors`: embeddings, or for `feature_gaussian` feature statistics scored
    under the machines' normal `statistics` (`machine_statistics`).
    """
    records = splits[name]
    machines = np.array([machine_group(r) for r in records])
    train_machines = np.array([machine_group(r) for r in splits["train"]])
    if config.normal_only.score == "feature_gaussian":
        all_scores = machine_distances(vectors[name], machines, statistics)
    elif config.normal_only.score == "knn":
        all_scores = np.zeros(len(records))
        for group in np.unique(machines):
            members = machines == group
            all_scores[members] = knn_scores(vectors[name][members], vectors["train"][train_machines == group],
                                             config.normal_only.k)
    else:
        head = classifier.get_layer("arcface")
        logits = keras.ops.convert_to_numpy(head(keras.ops.convert_to_tensor(vectors[name])))
        all_scores = neg_log_prob_scores(logits, class_names, machines)
    return {group: all_scores[machines == group] for group in np.unique(machines)}


__all__ = ["SCORE_NAMES", "EMBEDDER", "REFERENCES", "FEATURE_STATISTICS", "class_name",
           "build_id_classifier", "check_machines", "feature_layer", "feature_model", "knn_scores",
           "neg_log_prob_scores", "train_id_embedding", "machine_scorer"]
