"""Typed configuration shared by the CLI, the notebooks and the tests.

Every value a user can set lives in one of these dataclasses. Presets are
plain instances; nothing in the rest of the package hides its own constants.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple, Union

FEATURE_KINDS = ("spectrogram", "mel", "log_frequency", "linear_frequency")
NORMALIZATIONS = ("fixed_db", "clip")
PROTOCOLS = ("supervised", "normal_only")
SYNTHETIC_LAYOUTS = ("mimii", "dcase2020", "dcase2021")

# Fixed dB windows mapped onto [0, 1] by the image step, per feature kind.
# The absolute kinds (`spectrogram`, `mel`) are referenced to full scale
# (a float sample of 1.0); on real MIMII/DCASE pump clips 99 % of their
# values fall between -55 and +6 dB. The relative kinds are referenced to the
# clip's own peak and clipped 80 dB below it, as in librosa's gallery recipe.
DEFAULT_DB_RANGES = {
    "spectrogram": (-80.0, 20.0),
    "mel": (-80.0, 20.0),
    "log_frequency": (-80.0, 0.0),
    "linear_frequency": (-80.0, 0.0),
}


@dataclass
class FeatureConfig:
    """How a waveform becomes a spectrogram image (see `pump_keras.audio.features`).

    Attributes:
        kind: one of `FEATURE_KINDS` (the paper's Table 6 features).
        sample_rate: the rate every clip must have, in Hz; a clip at another
            rate is an error, never silently resampled.
        channel: microphone index to use, or `"mean"` for the mean of all.
        n_fft: STFT frame length (periodic Hann window of the same length).
        hop_length: STFT hop in samples.
        n_mels: mel bands for `mel` (Slaney mel scale and area normalisation,
            librosa's defaults).
        n_log_bins: log-spaced frequency rows for `log_frequency`.
        log_fmin: lowest frequency in Hz of the `log_frequency` axis.
        top_db: dynamic range kept below the clip's peak by the relative
            kinds (`log_frequency`, `linear_frequency`).
        normalization: how dB values become pixel values:
            `"fixed_db"` maps the fixed window `db_range` onto [0, 1], so a
            louder clip looks brighter; `"clip"` standardises each clip by its
            own mean and standard deviation in dB (loudness and recording gain
            drop out, the spectral shape stays) and maps `clip_z_range`
            standard deviations onto [0, 1]. Both run in the graph, in
            training and in the exported model alike.
        db_range: `(low, high)` dB window of `"fixed_db"`; `None` takes
            `DEFAULT_DB_RANGES[kind]`.
        clip_z_range: `(low, high)` window of `"clip"`, in standard
            deviations about the clip's mean.
        image_size: image rows (the frequency axis), and its columns too
            unless `image_width` is set.
        image_width: image columns (the time axis); `None` makes the image
            square. A stationary pump needs fewer columns than rows.
        image_channels: channels of the image (the feature plane repeated),
            3 for ImageNet-style backbones.
        frequency_channel: the last channel carries each row's position on
            the frequency axis (0 at the bottom row, 1 at the top) instead of
            a copy of the plane, so convolutions, which are blind to where
            they are, can tell a 25 Hz line from a 2 kHz one (CoordConv,
            Liu et al. 2018). Needs `image_channels >= 2`.
        context_frames: for models that take frame vectors (the DCASE 2020
            autoencoder): each vector is this many consecutive log-mel
            frames of `n_mels` bands (`pump_keras.audio.frames`); images
            ignore it.
    """

    kind: str = "spectrogram"
    sample_rate: int = 16000
    channel: Union[int, str] = 0
    n_fft: int = 1024
    hop_length: int = 512
    n_mels: int = 128
    n_log_bins: int = 256
    log_fmin: float = 20.0
    top_db: float = 80.0
    normalization: str = "fixed_db"
    db_range: Optional[Tuple[float, float]] = None
    clip_z_range: Tuple[float, float] = (-3.0, 5.0)
    image_size: int = 224
    image_width: Optional[int] = None
    image_channels: int = 3
    frequency_channel: bool = False
    context_frames: int = 5

    def __post_init__(self):
        if self.kind not in FEATURE_KINDS:
            raise ValueError(
                f"Unknown feature kind {self.kind!r}; expected one of {FEATURE_KINDS}."
            )
        if isinstance(self.channel, str):
            if self.channel != "mean":
                if not self.channel.isdigit():
                    raise ValueError(
                        f"channel must be a non-negative index or 'mean', got {self.channel!r}."
                    )
                self.channel = int(self.channel)
        elif int(self.channel) < 0:
            raise ValueError(f"channel must be >= 0 or 'mean', got {self.channel!r}.")
        for name in ("sample_rate", "n_fft", "hop_length", "n_mels", "n_log_bins",
                     "image_size", "image_channels", "context_frames"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}.")
        if self.n_fft % 2:
            raise ValueError(f"n_fft must be even, got {self.n_fft}.")
        if not 0 < self.log_fmin < self.sample_rate / 2:
            raise ValueError(
                f"log_fmin must lie in (0, sample_rate / 2), got {self.log_fmin}."
            )
        if self.db_range is not None:
            low, high = (float(v) for v in self.db_range)
            if not low < high:
                raise ValueError(f"db_range must be (low, high) with low < high, got {self.db_range}.")
            self.db_range = (low, high)
        low, high = (float(v) for v in self.clip_z_range)
        if not low < high:
            raise ValueError(f"clip_z_range must be (low, high) with low < high, got {self.clip_z_range}.")
        self.clip_z_range = (low, high)
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}.")
        if self.image_width is not None and int(self.image_width) <= 0:
            raise ValueError(f"image_width must be positive or None, got {self.image_width!r}.")
        if self.frequency_channel and self.image_channels < 2:
            raise ValueError("frequency_channel needs image_channels >= 2 (one for the plane, "
                             f"one for the frequency position), got {self.image_channels}.")

    @property
    def image_shape(self) -> Tuple[int, int]:
        """`(rows, columns)` of the image: frequency by time."""
        return (self.image_size, self.image_width or self.image_size)

    @property
    def input_shape(self) -> Tuple[int, int, int]:
        """The backbone's input shape `(rows, columns, image_channels)`."""
        return (*self.image_shape, self.image_channels)

    @property
    def vector_shape(self) -> Tuple[int]:
        """The input shape `(n_mels * context_frames,)` of a model that takes frame vectors."""
        return (self.n_mels * self.context_frames,)

    @property
    def resolved_db_range(self) -> Tuple[float, float]:
        """The dB window in force: `db_range`, or the kind's default."""
        return self.db_range if self.db_range is not None else DEFAULT_DB_RANGES[self.kind]


@dataclass
class DataConfig:
    """Where the recordings are, how they are split, and how they are batched.

    Attributes:
        data_dir: root of a MIMII- or DCASE-layout tree; `None` means the
            built-in synthetic recordings.
        snr_db: keep only these MIMII SNR folders (e.g. `(-6,)`); `None` keeps all.
        folder_snr_db: the SNR in dB of `normal`/`abnormal` folders that no
            folder above names one for (an official MIMII archive unpacked
            to `pump/id_00/normal/...`); a folder such as `-6_dB_pump`,
            `min6dB` or `6dB` above them wins. `None` leaves it unknown.
        machine_ids: keep only these machine ids (e.g. `("00", "02")`).
        split_ratios: train/val/test fractions, grouped by clip key; each
            recording's split is a hash of (split_seed, clip key) cut at them.
        split_seed: seed of the split, part of every recording's hash.
        protocol: `"supervised"` (both classes in every split, the paper's
            setting) or `"normal_only"` (the DCASE protocol: train and val
            hold normal clips only; a DCASE tree's own train/test partition
            is kept, and on MIMII every abnormal clip is a test clip).
        split_file: a split manifest (`split.csv`, as a run writes it) to use
            as it is instead of splitting `data_dir`: a fixed split shared by
            several runs, or one made by hand.
        batch_size: images per batch.
        shuffle_seed: seed of the training shuffle (a full permutation of
            the training split, new every epoch).
        cache: cache images on disk in the run directory after the first epoch.
        num_parallel_calls: parallel decode/feature calls; `None` means one per
            CPU core (or tf.data's choice with `autotune`).
        prefetch_batches: batches prepared ahead of the consumer.
        autotune: let tf.data tune parallelism and buffers. Off by default: on
            two cores its tuning made passes markedly slower half of the time.
    """

    data_dir: Optional[str] = None
    snr_db: Optional[Tuple[float, ...]] = None
    folder_snr_db: Optional[float] = None
    machine_ids: Optional[Tuple[str, ...]] = None
    split_ratios: Tuple[float, float, float] = (0.7, 0.2, 0.1)
    split_seed: int = 0
    protocol: str = "supervised"
    split_file: Optional[str] = None
    batch_size: int = 32
    shuffle_seed: int = 0
    cache: bool = True
    num_parallel_calls: Optional[int] = None
    prefetch_batches: int = 2
    autotune: bool = False

    def __post_init__(self):
        ratios = tuple(float(r) for r in self.split_ratios)
        if len(ratios) != 3 or min(ratios) < 0 or abs(sum(ratios) - 1.0) > 1e-6:
            raise ValueError(
                f"split_ratios must be three non-negative fractions summing to 1, got {self.split_ratios}."
            )
        self.split_ratios = ratios
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}.")
        if self.batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}.")
        if self.prefetch_batches <= 0:
            raise ValueError(f"prefetch_batches must be positive, got {self.prefetch_batches}.")
        if self.num_parallel_calls is not None and self.num_parallel_calls <= 0:
            raise ValueError(
                f"num_parallel_calls must be positive or None, got {self.num_parallel_calls}.")
        if self.snr_db is not None:
            self.snr_db = tuple(float(v) for v in self.snr_db)
        if self.folder_snr_db is not None:
            self.folder_snr_db = float(self.folder_snr_db)
        if self.machine_ids is not None:
            self.machine_ids = tuple(f"{int(v):02d}" for v in self.machine_ids)


@dataclass
class SyntheticConfig:
    """The built-in synthetic pump recordings (see `pump_keras.data.synthetic`).

    Attributes:
        clips_per_class: clips per machine id and class (normal, abnormal).
        abnormal_clips_per_id: abnormal clips per machine id, when they
            should be fewer than the normal ones (real sets are imbalanced:
            MIMII pump is about 11 % abnormal); `None` takes `clips_per_class`.
        seconds: length of each clip.
        snr_db: SNR folders to write; the same pump recording is mixed with
            the same background at each, as in MIMII.
        seed: everything is a deterministic function of this seed.
        machine_ids: machine ids to write.
        sample_rate: sample rate of the written files.
        channels: microphones of the simulated array.
        fault_boost_db: makes every fault this much stronger (added to the
            dB severities; the clogging speed drop scaled by the same
            amplitude factor). 0 keeps the default, often subtle faults.
        layout: `"mimii"` (SNR folders, `normal`/`abnormal`), `"dcase2020"`
            (the DCASE 2020 development set's `train/` and `test/`) or
            `"dcase2021"` (sections with a source and a speed-shifted target
            domain); the DCASE layouts are mono and take one SNR
            (`pump_keras.data.synthetic_layouts`).
        target_speed_shift: `"dcase2021"`: the target domain's shaft runs
            this fraction faster.
        target_train_clips: `"dcase2021"`: normal target-domain training
            clips per section (DCASE 2021 gives three).
    """

    clips_per_class: int = 10
    seconds: float = 2.0
    snr_db: Tuple[float, ...] = (0.0,)
    seed: int = 0
    machine_ids: Tuple[str, ...] = ("00", "02", "04", "06")
    sample_rate: int = 16000
    channels: int = 8
    fault_boost_db: float = 0.0
    abnormal_clips_per_id: Optional[int] = None
    layout: str = "mimii"
    target_speed_shift: float = 0.12
    target_train_clips: int = 3

    def __post_init__(self):
        if self.clips_per_class <= 0:
            raise ValueError(f"clips_per_class must be positive, got {self.clips_per_class}.")
        if self.abnormal_clips_per_id is not None and self.abnormal_clips_per_id < 0:
            raise ValueError(f"abnormal_clips_per_id must be >= 0 or None, got {self.abnormal_clips_per_id}.")
        if not self.seconds > 0:
            raise ValueError(f"seconds must be positive, got {self.seconds}.")
        if self.channels <= 0:
            raise ValueError(f"channels must be positive, got {self.channels}.")
        self.snr_db = tuple(float(v) for v in self.snr_db)
        self.machine_ids = tuple(f"{int(v):02d}" for v in self.machine_ids)
        if self.layout not in SYNTHETIC_LAYOUTS:
            raise ValueError(f"layout must be one of {SYNTHETIC_LAYOUTS}, got {self.layout!r}.")
        if self.layout != "mimii" and len(self.snr_db) != 1:
            raise ValueError(f"The {self.layout} layout has no SNR folders: give one snr_db, got {self.snr_db}.")
        if not -0.5 < self.target_speed_shift < 0.5:
            raise ValueError(f"target_speed_shift must lie in (-0.5, 0.5), got {self.target_speed_shift}.")
        if self.target_train_clips < 0:
            raise ValueError(f"target_train_clips must be >= 0, got {self.target_train_clips}.")


STRATEGIES = ("auto", "mirrored", "multiworker")
CPU_ALLOCATORS = ("bfc", "default")
MIXED_PRECISION = {"bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
CLASS_BALANCE = ("weights", "none")
OPTIMIZERS = ("sgd", "adamw", "adam")
CHECKPOINT_METRICS = ("val_loss", "val_auc", "last")


PAPER_MODEL = "efficientnetv2_s"
# ModelConfig's flat fields before each model had its own section; a config
# that still names them is read as it was meant (`ModelConfig.upgrade`).
LEGACY_MODEL_FIELDS = ("attention", "attention_placement", "reduction", "width_multiplier",
                       "depth_multiplier", "dropout_rate", "drop_connect_rate")


@dataclass
class EfficientNetV2Options:
    """The options of the paper's network, `efficientnetv2_s` (paper Tables 2-3; defaults are the paper's).

    Attributes:
        attention: attention registry name in the attention stages.
        attention_placement: `"mbconv"` (stages 4-6, Table 3) or `"all"`.
        reduction: channel reduction of CBAM-style attention MLPs.
        width_multiplier, depth_multiplier: EfficientNet scaling.
        dropout_rate: dropout before the logit.
        drop_connect_rate: stochastic depth rate of the last block.
        bn_momentum: BatchNorm moving-average momentum (Keras' 0.9).
        stem_downsampling: `"stride"` (the paper's stride-2 stem) or `"max_pool"`.
        attention_options: keyword arguments per attention name, e.g.
            `{"improved_cbam": {"mapping": "paper"}}`.
        weights: the local path of a keras.applications EfficientNetV2-S
            weights file to start from, or None.
    """

    attention: Optional[str] = "improved_cbam"
    attention_placement: str = "mbconv"
    reduction: int = 16
    width_multiplier: float = 1.0
    depth_multiplier: float = 1.0
    dropout_rate: float = 0.2
    drop_connect_rate: float = 0.2
    bn_momentum: float = 0.9
    stem_downsampling: str = "stride"
    attention_options: Optional[Dict[str, Any]] = None
    weights: Optional[str] = None

    def __post_init__(self):
        if self.reduction < 1:
            raise ValueError(f"reduction must be >= 1, got {self.reduction}.")
        for name in ("width_multiplier", "depth_multiplier"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}.")
        for name in ("dropout_rate", "drop_connect_rate"):
            if not 0.0 <= float(getattr(self, name)) < 1.0:
                raise ValueError(f"{name} must lie in [0, 1), got {getattr(self, name)!r}.")


@dataclass
class ModelConfig:
    """Which network to build (`pump_keras.models.build(name, **options)`): a one-of, as in Model Garden.

    The paper's network has its own typed section, `efficientnetv2_s`; every
    other registry model takes its options from `options[name]` (a mapping of
    builder keyword arguments; the builder's defaults otherwise). Only the
    chosen model's section is used, so switching `name` on any preset just
    works: the `quick` preset's scaling applies to `efficientnetv2_s`, and
    `--set model.name=plain_cnn` builds the plain CNN with its own defaults.
    The input shape always comes from `FeatureConfig`.

    Attributes:
        name: model registry name (`pump_keras.models.available_models()`).
        input_standardization: put a `RowStandardization` layer first:
            each image row (frequency band) is standardised by its mean and
            standard deviation over the training split, computed before the
            first epoch and saved in the model (so served audio gets the same).
        efficientnetv2_s: the paper's network's options.
        options: `{model name: {option: value}}` for the other models, e.g.
            `--set model.options.plain_cnn.filters=[16,32,64]`.
    """

    name: str = PAPER_MODEL
    input_standardization: bool = False
    efficientnetv2_s: EfficientNetV2Options = field(default_factory=EfficientNetV2Options)
    options: Dict[str, Dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self):
        if isinstance(self.efficientnetv2_s, dict):
            self.efficientnetv2_s = EfficientNetV2Options(**self.efficientnetv2_s)
        self.options = {str(name): dict(values or {}) for name, values in (self.options or {}).items()}
        for name, values in self.options.items():
            if name == PAPER_MODEL:
                raise ValueError(f"the options of {PAPER_MODEL} have their own section: set "
                                 f"model.{PAPER_MODEL}.OPTION, not model.options.{PAPER_MODEL}.OPTION.")

    def builder_options(self) -> Dict[str, Any]:
        """The keyword arguments of the chosen model's builder (without the input shape)."""
        if self.name == PAPER_MODEL:
            return dataclasses.asdict(self.efficientnetv2_s)
        return dict(self.options.get(self.name, {}))

    @staticmethod
    def upgrade(values: dict) -> dict:
        """Model settings written before the one-of (flat fields, flat `options`) in today's layout.

        Then the typed fields went to every builder that took them (all take
        `dropout_rate`), and `options` held the chosen model's own options.
        """
        values = dict(values)
        legacy = {key: values.pop(key) for key in LEGACY_MODEL_FIELDS if key in values}
        options = dict(values.get("options") or {})
        flat = {key: value for key, value in options.items() if not isinstance(value, dict)}
        if not legacy and not flat:
            return values
        name = values.get("name", PAPER_MODEL)
        nested = {key: value for key, value in options.items() if isinstance(value, dict)}
        paper = dict(values.get(PAPER_MODEL) or {})
        if name == PAPER_MODEL:
            paper.update({**legacy, **flat})
        else:
            chosen = dict(nested.get(name) or {})
            if "dropout_rate" in legacy:
                chosen.setdefault("dropout_rate", legacy.pop("dropout_rate"))
            nested[name] = {**chosen, **flat}
            paper.update(legacy)
        values[PAPER_MODEL] = paper
        values["options"] = nested
        return values


@dataclass
class TrainConfig:
    """The training recipe (paper section 3.2) and how it runs.

    Attributes:
        epochs: training epochs.
        learning_rate: initial SGD learning rate.
        final_learning_rate: the cosine schedule's floor (CosineDecay's
            `alpha = final_learning_rate / learning_rate`).
        optimizer: `"sgd"` (SGD with momentum), `"adamw"` (AdamW) or `"adam"`
            (Adam without weight decay: the DCASE 2020 baseline's).
        momentum: SGD momentum.
        weight_decay: with `"sgd"`, L2 regularisation added to the gradient
            before the momentum (PyTorch's `SGD(weight_decay=...)`); with
            `"adamw"`, AdamW's decoupled decay (each step subtracts
            `lr * weight_decay * w`).
        mixup_alpha: Beta(alpha, alpha) of MixUp on training batches; 0 turns
            it off. 0.2, the value Zhang et al. recommend for ImageNet.
        label_smoothing: BCE label smoothing.
        time_roll: roll each training image along time by a random shift
            (a stationary pump sounds the same from any start).
        spec_augment_masks: SpecAugment masks per training image: this many
            frequency bands and this many time bands (0: none).
        spec_augment_width: the widest mask, as a fraction of its axis.
        pseudo_anomaly_fraction: this fraction of the normal training images
            (drawn anew each epoch) become made-up anomalies, labelled
            abnormal: one frequency band made louder or quieter
            (`recipe.pseudo_anomalies`). It teaches "unlike normal" beside
            the recorded fault types; 0 turns it off.
        pseudo_anomaly_strength: `(low, high)` of the band's change, in
            standard deviations of the image.
        pseudo_anomaly_width: the widest band, as a fraction of the rows.
        warmup_epochs: epochs over which the learning rate rises linearly
            from `final_learning_rate` to `learning_rate` before the cosine
            decay (0: none; fractions allowed).
        gradient_clip_norm: rescale each step's gradients so their global
            norm is at most this (`global_clipnorm`); `None`: no clipping.
        class_balance: `"weights"` weighs each clip by `n / (2 n_class)` of its
            class on the training split, so both classes carry equal loss and
            every clip is still seen once per epoch (balanced sampling would
            repeat the ~11 % abnormal clips eight times); `"none"` leaves it.
        checkpoint_metric: which epoch's weights `best.keras` keeps:
            `"val_loss"` (lowest validation loss), `"val_auc"` (highest
            validation AUC; under MixUp and label smoothing the loss ranks
            epochs by calibration more than by how well they separate the
            classes) or `"last"` (the final epoch's, at the end of the
            learning-rate decay). On a validation split of a few dozen clips
            the loss is lowest in the first epochs, before the network has
            learnt much, and picking the best of 60 noisy AUCs fits the
            validation split's noise: `"last"` chooses nothing.
        seed: seeds weights, shuffling, MixUp and dropout; a run is a
            deterministic function of its config.
        deterministic: ask TensorFlow for deterministic kernels (slower on GPU).
        strategy: `"auto"` (one device, or all local GPUs mirrored),
            `"mirrored"` or `"multiworker"` (`TF_CONFIG` names the workers).
        mixed_precision: None, `"bf16"` or `"fp16"` (logits stay float32).
        jit_compile: XLA-compile the train step.
        cpu_allocator: TensorFlow's host memory allocator, process-wide.
            `"bfc"` keeps the memory it frees for the next tensors;
            `"default"` is TensorFlow's own, which hands large buffers back to
            the system, so each new one is paged in afresh: on CPU the
            improved-CBAM EfficientNetV2-S then trains slower
            (`benchmarks/model_cost.py --cpu-allocator` measures both).
            BFC costs memory (it rounds buffers up and keeps what it has). TensorFlow reads it once, when
            its runtime starts; training sets it first, so it has no effect in
            a process that already ran TensorFlow ops. Does not change results.
        init_from: run directory or `.keras` file whose weights start this
            run, or a keras.applications EfficientNetV2S weights file.
        verbose: Keras progress output (0 silent, 1 progress bar, 2 one line per epoch).
        collective_timeout_s: with `"multiworker"`, how long a worker waits
            at one collective (a training step's all-reduce, the resume
            check) for the others before it stops with an error; 0 waits
            forever. Long enough for the workers' slowest first step
            (decoding the audio into the cache). The wait for every worker to
            start is TensorFlow's own and not limited. Does not change results.
    """

    epochs: int = 200
    learning_rate: float = 0.01
    final_learning_rate: float = 0.001
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 1e-4
    mixup_alpha: float = 0.2
    label_smoothing: float = 0.1
    time_roll: bool = False
    spec_augment_masks: int = 0
    spec_augment_width: float = 0.1
    pseudo_anomaly_fraction: float = 0.0
    pseudo_anomaly_strength: Tuple[float, float] = (1.0, 3.0)
    pseudo_anomaly_width: float = 0.1
    warmup_epochs: float = 0.0
    gradient_clip_norm: Optional[float] = None
    class_balance: str = "weights"
    checkpoint_metric: str = "last"
    seed: int = 0
    deterministic: bool = True
    strategy: str = "auto"
    mixed_precision: Optional[str] = None
    jit_compile: bool = False
    cpu_allocator: str = "bfc"
    init_from: Optional[str] = None
    verbose: int = 1
    collective_timeout_s: float = 600.0

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}.")
        if not 0 < self.final_learning_rate <= self.learning_rate:
            raise ValueError(
                "final_learning_rate must lie in (0, learning_rate], got "
                f"{self.final_learning_rate} with learning_rate {self.learning_rate}.")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must lie in [0, 1), got {self.label_smoothing}.")
        if self.mixup_alpha < 0:
            raise ValueError(f"mixup_alpha must be >= 0, got {self.mixup_alpha}.")
        if self.spec_augment_masks < 0:
            raise ValueError(f"spec_augment_masks must be >= 0, got {self.spec_augment_masks}.")
        if not 0.0 < self.spec_augment_width <= 1.0:
            raise ValueError(f"spec_augment_width must lie in (0, 1], got {self.spec_augment_width}.")
        if not 0.0 <= self.pseudo_anomaly_fraction <= 1.0:
            raise ValueError(f"pseudo_anomaly_fraction must lie in [0, 1], got {self.pseudo_anomaly_fraction}.")
        low, high = (float(v) for v in self.pseudo_anomaly_strength)
        if not 0.0 < low <= high:
            raise ValueError("pseudo_anomaly_strength must be (low, high) with 0 < low <= high, "
                             f"got {self.pseudo_anomaly_strength}.")
        self.pseudo_anomaly_strength = (low, high)
        if not 0.0 < self.pseudo_anomaly_width <= 1.0:
            raise ValueError(f"pseudo_anomaly_width must lie in (0, 1], got {self.pseudo_anomaly_width}.")
        if self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {self.warmup_epochs}.")
        if self.gradient_clip_norm is not None and not self.gradient_clip_norm > 0:
            raise ValueError(f"gradient_clip_norm must be positive or None, got {self.gradient_clip_norm}.")
        if self.checkpoint_metric not in CHECKPOINT_METRICS:
            raise ValueError(f"checkpoint_metric must be one of {CHECKPOINT_METRICS}, "
                             f"got {self.checkpoint_metric!r}.")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}.")
        if self.optimizer == "adam" and self.weight_decay:
            raise ValueError(f"optimizer 'adam' has no weight decay (weight_decay {self.weight_decay}); "
                             "use 'adamw' for decoupled decay, or set weight_decay to 0.")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}.")
        if self.class_balance not in CLASS_BALANCE:
            raise ValueError(f"class_balance must be one of {CLASS_BALANCE}, got {self.class_balance!r}.")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}.")
        if self.cpu_allocator not in CPU_ALLOCATORS:
            raise ValueError(f"cpu_allocator must be one of {CPU_ALLOCATORS}, got {self.cpu_allocator!r}.")
        if self.mixed_precision is not None and self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(
                f"mixed_precision must be None or one of {tuple(MIXED_PRECISION)}, got {self.mixed_precision!r}.")
        if self.collective_timeout_s < 0:
            raise ValueError(f"collective_timeout_s must be >= 0 (0: no limit), got {self.collective_timeout_s}.")


@dataclass
class ExportConfig:
    """Where a finished run's SavedModel goes: `out_dir/name/version/`.

    Attributes:
        enabled: export at the end of `pump_keras.train`.
        out_dir: the model base path TF Serving watches.
        name: the model name (a folder of `out_dir`).
        version: the version folder; `None` takes the next free number.
        clip_length_tolerance: `predict` and the serving client warn about a
            clip whose length differs from the training clips' (recorded in
            the export) by more than this fraction of it; such a clip is
            still scored whole, as one clip.
        machine: a normal-only run scores each clip against one machine's
            normal sounds, so its SavedModel serves one machine: this one
            ("pump/id_00"); `None` takes the run's only machine.
    """

    enabled: bool = True
    out_dir: str = "saved_models"
    name: str = "pump_anomaly"
    version: Optional[int] = None
    clip_length_tolerance: float = 0.1
    machine: Optional[str] = None

    def __post_init__(self):
        if self.version is not None and int(self.version) < 1:
            raise ValueError(f"version must be a positive integer, got {self.version!r}.")
        if not self.clip_length_tolerance >= 0:
            raise ValueError(f"clip_length_tolerance must be >= 0, got {self.clip_length_tolerance!r}.")


THRESHOLD_CRITERIA = ("balanced_accuracy", "fpr", "gamma")
DEFAULT_MAX_FPR = 0.1  # the pAUC limit of DCASE


@dataclass
class EvalConfig:
    """How a run is evaluated (`pump_keras.evaluate`); it does not change training.

    Attributes:
        threshold_criterion: how the decision threshold is chosen on the
            validation split: `"balanced_accuracy"` (its maximum), `"fpr"`
            (the lowest threshold whose false-alarm rate is at most
            `target_fpr`), or `"gamma"` (a gamma distribution fitted to the
            normal clips' scores, cut at its `1 - target_fpr` quantile: the
            DCASE 2021 baseline's rule; needs no anomalies, so it suits the
            normal-only protocol).
        target_fpr: the false-alarm rate for `"fpr"` and `"gamma"`.
        max_fpr: the pAUC's FPR limit (0.1, the DCASE convention).
        bootstrap: bootstrap resamples for the confidence intervals (0: none).
        confidence: the intervals' level.
        seed: seed of the bootstrap.
    """

    threshold_criterion: str = "balanced_accuracy"
    target_fpr: Optional[float] = None
    max_fpr: float = DEFAULT_MAX_FPR
    bootstrap: int = 1000
    confidence: float = 0.95
    seed: int = 0

    def __post_init__(self):
        if self.threshold_criterion not in THRESHOLD_CRITERIA:
            raise ValueError(f"threshold_criterion must be one of {THRESHOLD_CRITERIA}, "
                             f"got {self.threshold_criterion!r}.")
        if self.threshold_criterion in ("fpr", "gamma") and self.target_fpr is None:
            raise ValueError(f"threshold_criterion {self.threshold_criterion!r} needs target_fpr (e.g. 0.1).")
        if self.target_fpr is not None and not 0.0 <= self.target_fpr < 1.0:
            raise ValueError(f"target_fpr must lie in [0, 1), got {self.target_fpr}.")
        if not 0.0 < self.max_fpr <= 1.0:
            raise ValueError(f"max_fpr must lie in (0, 1], got {self.max_fpr}.")
        if self.bootstrap < 0:
            raise ValueError(f"bootstrap must be >= 0, got {self.bootstrap}.")
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"confidence must lie in (0, 1), got {self.confidence}.")


NORMAL_ONLY_SCORES = ("knn", "neg_log_prob", "feature_gaussian")
NORMAL_ONLY_CLASSES = ("machine", "machine_attributes")


@dataclass
class NormalOnlyConfig:
    """Our normal-only method: a machine-id classifier with an ArcFace head on an image backbone.

    The backbone (`model`) learns to tell the training split's machines
    apart from their normal clips alone (self-supervised: the ids come free
    with the recordings), through an additive angular margin head (ArcFace,
    Deng et al. 2019); a clip is anomalous when its features fit its own
    machine's normal ones badly.

    Attributes:
        classes: what the head tells apart: `"machine"` (machine type and id,
            or section) or `"machine_attributes"` (also the domain and the
            attributes of DCASE 2021-2023 file names, where they exist).
        embedding_dim: the embedding's size (a Dense + BatchNorm on the
            backbone's pooled features).
        scale: ArcFace's `s`.
        margin: ArcFace's `m`, in radians.
        score: `"feature_gaussian"` (the default; see below); `"knn"`: the
            mean cosine distance from a clip's embedding to
            the `k` nearest embeddings of its machine's training clips;
            `"neg_log_prob"`: `-log p(own class)` under the head's softmax
            (without the margin); `"feature_gaussian"`: how far the time
            mean and spread of the backbone's feature map at `feature_stride`
            lie from those of the machine's training clips (the mean squared
            z-score under their per-feature mean and spread: a diagonal
            Gaussian per frequency row, as PaDiM, Defard et al. 2020, fits
            one per image patch).
        k: neighbours for `"knn"`.
        feature_stride: for `"feature_gaussian"`, which feature map: the
            backbone's deepest one whose rows are the input's divided by this.
    """

    classes: str = "machine"
    embedding_dim: int = 128
    scale: float = 30.0
    margin: float = 0.5
    score: str = "feature_gaussian"
    k: int = 1
    feature_stride: int = 4

    def __post_init__(self):
        if self.classes not in NORMAL_ONLY_CLASSES:
            raise ValueError(f"classes must be one of {NORMAL_ONLY_CLASSES}, got {self.classes!r}.")
        if self.score not in NORMAL_ONLY_SCORES:
            raise ValueError(f"score must be one of {NORMAL_ONLY_SCORES}, got {self.score!r}.")
        for name in ("embedding_dim", "k", "feature_stride"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)!r}.")
        if self.scale <= 0:
            raise ValueError(f"scale must be positive, got {self.scale}.")
        if not 0.0 <= self.margin < 1.5:
            raise ValueError(f"margin must lie in [0, 1.5) radians, got {self.margin}.")


@dataclass
class RunConfig:
    """Everything one training run is: the file written to `run_dir/config.json`.

    Attributes:
        preset: the preset these values started from (informational).
        run_dir: where the run's files go; rerunning with the same config resumes.
        data, features, model, train, export: see their classes.
        synthetic: the recordings generated when `data.data_dir` is None.
        evaluation: how `pump_keras.evaluate` scores the run.
        normal_only: our normal-only method (`data.protocol="normal_only"`
            with an image model).
    """

    preset: str = "paper"
    run_dir: str = "runs/paper"
    data: DataConfig = field(default_factory=DataConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    normal_only: NormalOnlyConfig = field(default_factory=NormalOnlyConfig)


def to_dict(config) -> dict:
    """A JSON-ready dict of a config dataclass (tuples become lists)."""
    return dataclasses.asdict(config)


def replace(config, **changes):
    """A copy of `config` with `changes` applied and validated again."""
    return dataclasses.replace(config, **changes)


__all__ = [
    "FEATURE_KINDS",
    "DEFAULT_DB_RANGES",
    "FeatureConfig",
    "DataConfig",
    "SyntheticConfig",
    "ModelConfig",
    "EfficientNetV2Options",
    "TrainConfig",
    "ExportConfig",
    "NormalOnlyConfig",
    "RunConfig",
    "EvalConfig",
    "STRATEGIES",
    "PROTOCOLS",
    "SYNTHETIC_LAYOUTS",
    "MIXED_PRECISION",
    "to_dict",
    "replace",
]
