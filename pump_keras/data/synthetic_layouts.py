"""Where the synthetic recordings go in the DCASE layouts, and which of them are a shifted target domain.

`pump_keras.data.synthetic.generate_dataset` writes the MIMII layout by
default; with `SyntheticConfig.layout` it writes the DCASE trees instead
(mono files: DCASE's are single-microphone), from the jobs listed here:

* `"dcase2020"`: ``dev_data/pump/train/normal_id_XX_NNNNNNNN.wav`` (normal
  clips only) and ``dev_data/pump/test/{normal,anomaly}_id_XX_NNNNNNNN.wav``
  (as many held-out normal clips as anomalies, at most half the normal ones,
  and every anomaly), the DCASE 2020 Task 2 development set's layout.
* `"dcase2021"`: one section per machine id (in the order of
  `machine_ids`), with a *source* domain (the pump as it is) and a *target*
  domain whose shaft runs `target_speed_shift` faster, as DCASE 2021 shifts
  the operating condition: ``dcase2021/pump/train/`` holds the source normal
  clips and `target_train_clips` target ones, ``source_test/`` and
  ``target_test/`` held-out normal clips and anomalies of each domain.
  File names carry the domain and a speed attribute,
  ``section_SS_target_test_anomaly_NNNN_speed_1.12.wav``.

Target-domain recordings are other recordings than the source ones (their
random streams are drawn at clip indices from `TARGET_INDEX_OFFSET` on).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List

from pump_keras.config import SyntheticConfig
from pump_keras.config.schema import SYNTHETIC_LAYOUTS as LAYOUTS

TARGET_INDEX_OFFSET = 100_000
DCASE_CLASS = {"normal": "normal", "abnormal": "anomaly"}


@dataclass(frozen=True)
class ClipJob:
    """One recording to write: the generator's clip key, its domain's speed factor, and its path."""

    machine_id: str
    label: str
    index: int
    speed_factor: float
    path: str


def _counts(config: SyntheticConfig):
    """(normal clips, abnormal clips, held-out normal clips) per machine id."""
    normal = config.clips_per_class
    abnormal = config.clips_per_class if config.abnormal_clips_per_id is None else config.abnormal_clips_per_id
    return normal, abnormal, min(abnormal, normal // 2)


def dcase2020_jobs(out_dir: str, config: SyntheticConfig) -> List[ClipJob]:
    """The DCASE 2020 development tree of `config` under `out_dir`."""
    normal, abnormal, held_out = _counts(config)
    root = os.path.join(out_dir, "dev_data", "pump")
    jobs = []
    for machine_id in config.machine_ids:
        for index in range(normal):
            subset = "test" if index >= normal - held_out else "train"
            jobs.append(ClipJob(machine_id, "normal", index, 1.0,
                                os.path.join(root, subset, f"normal_id_{machine_id}_{index:08d}.wav")))
        for index in range(abnormal):
            jobs.append(ClipJob(machine_id, "abnormal", index, 1.0,
                                os.path.join(root, "test", f"anomaly_id_{machine_id}_{index:08d}.wav")))
    return jobs


def dcase2021_jobs(out_dir: str, config: SyntheticConfig) -> List[ClipJob]:
    """The DCASE 2021-style tree of `config` under `out_dir`: a source and a speed-shifted target domain."""
    normal, abnormal, held_out = _counts(config)
    root = os.path.join(out_dir, "dcase2021", "pump")
    jobs = []
    for section, machine_id in enumerate(config.machine_ids):
        for domain, factor, offset in (("source", 1.0, 0), ("target", 1.0 + config.target_speed_shift,
                                                              TARGET_INDEX_OFFSET)):
            train_clips = normal - held_out if domain == "source" else config.target_train_clips
            attribute = f"speed_{factor:.2f}"

            def job(label, number, subset):
                folder = "train" if subset == "train" else f"{domain}_test"
                name = (f"section_{section:02d}_{domain}_{subset}_{DCASE_CLASS[label]}_{number:04d}_"
                        f"{attribute}.wav")
                return ClipJob(machine_id, label, offset + number, factor, os.path.join(root, folder, name))

            jobs += [job("normal", n, "train") for n in range(train_clips)]
            jobs += [job("normal", train_clips + n, "test") for n in range(held_out)]
            jobs += [job("abnormal", n, "test") for n in range(abnormal)]
    return jobs


def dcase_jobs(out_dir: str, config: SyntheticConfig) -> List[ClipJob]:
    """The jobs of `config.layout` ("dcase2020" or "dcase2021")."""
    if config.layout == "dcase2020":
        return dcase2020_jobs(out_dir, config)
    if config.layout == "dcase2021":
        return dcase2021_jobs(out_dir, config)
    raise ValueError(f"dcase_jobs: layout {config.layout!r} is not a DCASE layout.")


__all__ = ["LAYOUTS", "TARGET_INDEX_OFFSET", "ClipJob", "dcase2020_jobs", "dcase2021_jobs", "dcase_jobs"]
