"""The named presets: `paper` (every value the paper states), `paper_pretrain`, and `quick` (CPU-sized)."""

from __future__ import annotations

import dataclasses

from pump_keras.config.schema import (
    DataConfig, EfficientNetV2Options, EvalConfig, ExportConfig, FeatureConfig, ModelConfig, RunConfig, SyntheticConfig,
    TrainConfig)
from pump_keras.errors import ConfigError


def paper_preset() -> RunConfig:
    """The paper's recipe: 224 px spectrograms, improved-CBAM EfficientNetV2-S, 200 epochs.

    The paper's values: 224 px `spectrogram` images, batch 32, 200 epochs,
    cosine decay 0.01 -> 0.001, MixUp and label smoothing (no values given),
    BCE on logits, 7:2:1 split. Ours, where the paper is silent: SGD with
    momentum 0.9 and L2 weight decay 1e-4 (the common PyTorch recipe), MixUp
    alpha 0.2, smoothing 0.1, class weights, the fixed dB window. All SNR
    folders of `data_dir` are used; `paper_pretrain_preset` is the paper's
    pretraining on -6 dB. Deterministic kernels are off: on GPUs they cost
    speed and some have none.
    """
    return RunConfig(
        preset="paper",
        run_dir="runs/paper",
        data=DataConfig(batch_size=32, split_ratios=(0.7, 0.2, 0.1)),
        features=FeatureConfig(kind="spectrogram", image_size=224),
        model=ModelConfig(),  # EfficientNetV2Options' defaults are the paper's
        train=TrainConfig(epochs=200, learning_rate=0.01, final_learning_rate=0.001,
                          deterministic=False),
    )


def paper_pretrain_preset() -> RunConfig:
    """The paper's pretraining (its section 2.1): the `paper` recipe on the -6 dB MIMII folder only.

    The paper pretrains on the low-SNR -6 dB pump set "to improve the
    adaptability of the model in the real industrial environment", then
    fine-tunes; it does not say on which recordings, so the fine-tuning run
    is the user's choice (`paper` with `train.init_from` set to this run).
    """
    config = paper_preset()
    return dataclasses.replace(config, preset="paper_pretrain", run_dir="runs/paper_pretrain",
                               data=dataclasses.replace(config.data, snr_db=(-6.0,)))


def quick_preset() -> RunConfig:
    """CPU-sized and tuned on the learning benchmark (`benchmarks/learning.py`).

    The paper's network (improved-CBAM EfficientNetV2-S) at half width and a
    tenth of its depth (one block per stage, two in the last: seven in all),
    on an input chosen by the benchmark: 128 mel bands by 32
    time columns (a pump is stationary: rows matter more than columns), each
    clip standardised by its own dB mean and spread, the frequency position
    as the third channel, each band standardised by the training split's
    statistics (`model.input_standardization`). The recipe is the
    benchmark's, not the paper's: the `paper` preset's SGD with MixUp and
    label smoothing underfits a few hundred clips (the README's learning
    benchmark has the figures), so AdamW at 1e-3 decaying to 1e-5 with weight decay 1e-4, no
    MixUp, no label smoothing, no made-up anomalies, 60 epochs, each
    training image rolled along time by a random shift (`train.time_roll`:
    a stationary pump sounds the same from any start), the last epoch kept.
    Made for the built-in synthetic recordings at the generator's
    default fault strength (48 normal and 24 abnormal 2-second clips per
    machine id at 0 dB, split 6:2:2 so the test split is not tiny): the whole
    loop in a few minutes on two cores. With its seeds, the default run is
    the learning benchmark's 0 dB condition at seed 0.
    """
    return RunConfig(
        preset="quick",
        run_dir="runs/quick",
        data=DataConfig(batch_size=16, split_ratios=(0.6, 0.2, 0.2)),
        features=FeatureConfig(kind="mel", image_size=128, image_width=32, normalization="clip",
                               frequency_channel=True),
        model=ModelConfig(input_standardization=True, efficientnetv2_s=EfficientNetV2Options(
            width_multiplier=0.5, depth_multiplier=0.1, drop_connect_rate=0.0)),
        train=TrainConfig(epochs=60, optimizer="adamw", learning_rate=1e-3, final_learning_rate=1e-5,
                          weight_decay=1e-4, mixup_alpha=0.0, label_smoothing=0.0, time_roll=True),
        synthetic=SyntheticConfig(clips_per_class=48, abnormal_clips_per_id=24, seconds=2.0, snr_db=(0.0,)),
    )


def dcase2020_ae_preset() -> RunConfig:
    """The DCASE 2020 Task 2 baseline, ported: a dense autoencoder per machine id, normal clips only.

    The official recipe (Koizumi et al. 2020, the Keras baseline's
    `baseline.yaml`): log-mel 128 bands, n_fft 1024, hop 512, power 2, five
    frames per vector (640 values), the 640-128-128-128-128-8-128-128-128-128-640
    autoencoder with BatchNorm and ReLU, Adam at 1e-3, 100 epochs, batch
    512, a tenth of the training data held out for validation, the clip's
    mean squared reconstruction error as its anomaly score, one model per
    machine type and id. Ours: the validation tenth is a tenth of the
    training *recordings* (the baseline cut the last tenth of its frame
    vectors, which are the last files), and the decision threshold is the
    DCASE 2021 baseline's (a gamma fitted to normal scores, its 90 %
    quantile) on those held-out clips. On MIMII, whose folders have no
    official partition, a fifth of each id's normal recordings and all its
    abnormal ones are the test split. Without `--data-dir`, it runs on the
    `quick` preset's synthetic recordings.
    """
    return RunConfig(
        preset="dcase2020_ae",
        run_dir="runs/dcase2020_ae",
        data=DataConfig(batch_size=512, split_ratios=(0.72, 0.08, 0.2), protocol="normal_only"),
        features=FeatureConfig(kind="mel", n_fft=1024, hop_length=512, n_mels=128, context_frames=5),
        model=ModelConfig(name="dcase2020_ae"),
        train=TrainConfig(epochs=100, optimizer="adam", learning_rate=1e-3, final_learning_rate=1e-3,
                          weight_decay=0.0, mixup_alpha=0.0, label_smoothing=0.0),
        evaluation=EvalConfig(threshold_criterion="gamma", target_fpr=0.1),
        export=ExportConfig(enabled=False),
        synthetic=quick_preset().synthetic,
    )


def normal_only_preset() -> RunConfig:
    """Our normal-only method on the `quick` network: tell machine ids apart, score how badly a clip fits its own.

    The `quick` preset's network, input and recipe, trained under the
    normal-only protocol (no abnormal clip in training or validation) as a
    machine-id classifier with an ArcFace head (`NormalOnlyConfig`), scored
    by the diagonal Gaussian of the clip's machine on the time statistics of
    the stride-4 feature map (`feature_gaussian`: on the normal-only
    benchmark it beats the embedding's nearest neighbour, `knn`, by about
    0.13 AUC); each machine's threshold is the DCASE 2021 baseline's gamma
    rule on its held-out normal clips. Ours, not the paper's (the paper's
    classifier needs recorded faults).
    """
    config = quick_preset()
    return dataclasses.replace(
        config, preset="normal_only", run_dir="runs/normal_only",
        data=dataclasses.replace(config.data, protocol="normal_only"),
        evaluation=EvalConfig(threshold_criterion="gamma", target_fpr=0.1),
        export=ExportConfig(enabled=False))


PRESETS = {"paper": paper_preset, "paper_pretrain": paper_pretrain_preset, "quick": quick_preset,
           "dcase2020_ae": dcase2020_ae_preset, "normal_only": normal_only_preset}


def preset(name: str) -> RunConfig:
    """A fresh copy of preset `name`."""
    if name not in PRESETS:
        raise ConfigError(f"Unknown preset {name!r}; available: {', '.join(sorted(PRESETS))}.")
    return PRESETS[name]()
