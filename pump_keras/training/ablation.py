"""The paper's comparisons, regenerated: `python -m pump_keras.ablate --grid tables`.

    python -m pump_keras.ablate --grid tables --seeds 3                   # quick preset, synthetic data
    python -m pump_keras.ablate --grid tables --preset paper --data-dir /data/mimii --set "data.snr_db=[-6]" --seeds 5
    python -m pump_keras.ablate --axis model.efficientnetv2_s.attention=se,improved_cbam --axis features.kind=mel

A grid is one or more tables; a table is the product of its axes (a setting
and its values). `tables` is the paper's three: Table 4 (backbones: every
model of the table and of its text), Table 5 (attention modules in
EfficientNetV2-S) and Table 6 (features). In a backbone's cells, model
settings it does not take (the quick preset's scaling of the paper's
network) go back to their defaults.

Every cell trains K seeds (`train.seed` = 0..K-1; the split stays fixed, so
the spread is the training's) as ordinary runs under `OUT/TABLE/CELL/seed-K`,
so an interrupted grid resumes where it stopped and finished cells are not
retrained (a cell holding a run of other settings is refused). Synthetic
recordings are made once in `OUT/synthetic`; other synthetic settings on the
same `OUT` are refused. Writes `OUT/results.md` (mean +- std over seeds of
test accuracy, AUC, pAUC, balanced accuracy and F1, beside parameters and
FLOPs) and `OUT/results.json`.
"""

from __future__ import annotations

import itertools
import json
import os
import statistics
from typing import Dict, List, Sequence, Tuple

import keras

from pump_keras.config import load_config, to_dict
from pump_keras.data.synthetic import generate_dataset
from pump_keras.evaluation.metrics import HEADLINE_METRICS, METRIC_TITLES
from pump_keras.files import atomic_write_bytes
from pump_keras.models import load_model
from pump_keras.models.cost import count_flops
from pump_keras.run_dir import RunDirectory
from pump_keras.training.loop import train

Axis = Tuple[str, Tuple[str, ...]]

# The paper's tables as axes over the run config (values are YAML scalars).
TABLES: Dict[str, List[Axis]] = {
    # Table 4 (EfficientNet B0-B7, printed "V0-V7"; MobileViT; Keras' EfficientNetV2-S; ours) and the
    # models its text adds (CNN, ResNet50, Conformer).
    "backbones": [("model.name", (*(f"efficientnet_b{i}" for i in range(8)), "mobilevit", "plain_cnn", "resnet50",
                                  "conformer", "efficientnetv2s_keras", "efficientnetv2_s"))],
    "attentions": [("model.efficientnetv2_s.attention",
                    ("se", "cbam", "simam", "eca", "nam", "soca", "improved_cbam"))],
    "features": [("features.kind", ("spectrogram", "mel", "log_frequency", "linear_frequency"))],
}
GRIDS = {"tables": ("backbones", "attentions", "features"), **{name: (name,) for name in TABLES}}


def parse_axis(text: str) -> Axis:
    """`"model.attention=se,cbam"` -> `("model.attention", ("se", "cbam"))`."""
    key, sep, values = text.partition("=")
    items = tuple(v.strip() for v in values.split(",") if v.strip())
    if not sep or not key.strip() or not items:
        raise ValueError(f"--axis {text!r} must look like section.field=value1,value2")
    return key.strip(), items


def cells(axes: Sequence[Axis]) -> List[Tuple[str, List[str]]]:
    """Every cell of the product of `axes`: (name, overrides)."""
    result = []
    for values in itertools.product(*(values for _, values in axes)):
        overrides = [f"{key}={value}" for (key, _), value in zip(axes, values)]
        result.append(("+".join(str(v) for v in values), overrides))
    return result


def mean_std(values: Sequence[float]) -> str:
    """`"0.912 +- 0.013"` (sample std over seeds), or the value alone for one seed."""
    values = [v for v in values if v == v]
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} +- {statistics.stdev(values):.3f}"


def model_cost(run_dir: str) -> Dict[str, float]:
    """Parameters and forward GFLOPs per image of a run's model."""
    model = load_model(os.path.join(run_dir, RunDirectory.BEST))
    return {"params": model.count_params(), "gflops": count_flops(model) / 1e9}


def run_cell(base_overrides: List[str], overrides: List[str], preset: str, config_path, run_dir: str,
             seed: int, log) -> dict:
    """Trains (or resumes, or reads) one seed of one cell; returns its test metrics."""
    config = load_config(preset, config_path, [*base_overrides, *overrides, f"train.seed={seed}",
                                               f"run_dir={run_dir}", "export.enabled=false"])
    metrics_path = os.path.join(run_dir, RunDirectory.METRICS)
    if os.path.exists(metrics_path):
        RunDirectory(run_dir).check(config)  # a finished run of other settings is not this cell
        with open(metrics_path, encoding="utf-8") as handle:
            return json.load(handle)["test"]
    keras.backend.clear_session()
    return train(config, log=log).metrics["test"]


def synthetic_recordings(data_dir: str, settings) -> str:
    """`data_dir` holding the synthetic recordings of `settings` (a `SyntheticConfig`), made once.

    The settings are recorded in `synthetic.json`; a folder made with other
    settings is refused (the grid's finished cells were trained on it), naming
    the differences, and nothing in it is changed.
    """
    marker = os.path.join(data_dir, RunDirectory.SYNTHETIC_MARKER)
    requested = json.loads(json.dumps(to_dict(settings)))
    if os.path.exists(marker):
        with open(marker, encoding="utf-8") as handle:
            saved = json.load(handle)
        differences = [f"synthetic.{key}: {saved.get(key)!r} -> {requested.get(key)!r}"
                       for key in sorted(set(saved) | set(requested)) if saved.get(key) != requested.get(key)]
        if differences:
            raise ValueError(
                f"{data_dir} holds recordings made with other synthetic settings; nothing was changed. "
                "Differences (saved -> requested): " + "; ".join(differences)
                + ". Use another --out, or the saved settings to resume.")
        return data_dir
    generate_dataset(data_dir, settings)
    atomic_write_bytes(marker, json.dumps(requested).encode())
    return data_dir


def run_grid(tables: Dict[str, List[Axis]], seeds: int, out_dir: str, preset: str = "quick",
             config_path=None, overrides: Sequence[str] = (), log=print) -> dict:
    """Runs every cell of every table for `seeds` seeds; writes and returns the results."""
    base = list(overrides)
    config = load_config(preset, config_path, base)
    if config.data.data_dir is None:
        data_dir = synthetic_recordings(os.path.join(out_dir, RunDirectory.SYNTHETIC), config.synthetic)
        base.append(f"data.data_dir={data_dir}")
        log(f"Ablation on SYNTHETIC recordings in {data_dir} (a demonstration, not real data).")
    results = {}
    for table, axes in tables.items():
        rows = {}
        for name, cell_overrides in cells(axes):
            per_seed = []
            for seed in range(seeds):
                run_dir = os.path.join(out_dir, table, name, f"seed-{seed}")
                log(f"[{table}] {name} seed {seed}: {run_dir}")
                per_seed.append(run_cell(base, cell_overrides, preset, config_path, run_dir, seed,
                                         log=lambda message: None))
            cost = model_cost(os.path.join(out_dir, table, name, "seed-0"))
            rows[name] = {"overrides": cell_overrides, "seeds": per_seed, **cost,
                          **{metric: mean_std([s[metric] for s in per_seed]) for metric in HEADLINE_METRICS}}
        results[table] = {"axes": [[key, list(values)] for key, values in axes], "rows": rows}
    atomic_write_bytes(os.path.join(out_dir, "results.json"), (json.dumps(results, indent=2) + "\n").encode())
    atomic_write_bytes(os.path.join(out_dir, "results.md"), markdown(results, seeds, preset).encode())
    return results


def markdown(results: dict, seeds: int, preset: str) -> str:
    """The results as Markdown tables, one per table."""
    lines = [f"# Ablation ({preset} preset, {seeds} seed{'s' if seeds > 1 else ''}; test split, mean +- std)", ""]
    for table, result in results.items():
        axes = ", ".join(key for key, _ in result["axes"])
        lines += [f"## {table} ({axes})", "",
                  "| cell | params | GFLOPs/img | " + " | ".join(METRIC_TITLES[m] for m in HEADLINE_METRICS) + " |",
                  "| --- | ---: | ---: |" + " --- |" * len(HEADLINE_METRICS)]
        for name, row in result["rows"].items():
            lines.append(f"| {name} | {row['params']:,} | {row['gflops']:.3f} | "
                         + " | ".join(row[m] for m in HEADLINE_METRICS) + " |")
        lines.append("")
    return "\n".join(lines)
