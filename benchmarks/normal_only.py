"""Normal-only detection: our method against the ported DCASE 2020 baseline. `python benchmarks/normal_only.py`.

The two trained methods train on normal clips only (`data.protocol=normal_only`) and are tested
on held-out normal clips and every abnormal one, side by side on the same
split of the same recordings:

* `ours`: the `normal_only` preset (the `quick` improved-CBAM EfficientNetV2
  as a machine-id classifier with an ArcFace head; score: the diagonal
  Gaussian of the clip's machine on the time statistics of its stride-4
  feature map), plus `--set`;
* `dcase_ae`: the `dcase2020_ae` preset (the DCASE 2020 Task 2 baseline
  autoencoder, one per machine id) with batch 64 instead of 512
  (`AE_SETTINGS`): the preset's 100 epochs of batch 512 take about 50 000
  steps on the real development set but 400 on these few clips, where the
  autoencoder has not yet learnt to reconstruct (its AUC stays below 0.5);
  batch 64 gives it eight times the steps;
* `logmel_gaussian`: no training at all, the same per-machine diagonal
  Gaussian on the log-mel band means and spreads of the evaluation report's
  baseline (`normal_gaussian_baseline`): what a learnt method must beat.

Conditions: the learning benchmark's recordings (`benchmarks/learning.py`,
the generator at its default fault strength, 4 pump ids) at SNR 6, 0 and
-6 dB, each seed with new recordings, a new split and new weights. The
split: each id's normal recordings 6:2:2 (train, val, test), every abnormal
clip in test. `target_shift`: the generator's DCASE 2021 tree at 0 dB (the
same counts, mono), whose target domain runs 12 % faster and has three
normal training clips per section; train and val come from `train/` (3:1),
and the test split is the target domain's test clips.

Prints per condition the AUC and pAUC (means over ids, then mean +- std over
seeds), per id the mean AUC of each, and ends with
`auc_gain_vs_logmel_gaussian=X.XX`, then `auc_gain_vs_dcase_ae=X.XX`: mean
AUC over ids, seeds and conditions, ours minus the other's. Targets against
the autoencoder: >= +0.15, and ours at least as good on every id.

    python benchmarks/normal_only.py            # 3 conditions x 3 seeds
    python benchmarks/normal_only.py --small    # iterate: 0 dB, one seed

Runs live under `--out` and are reused when their metrics exist.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import learning  # noqa: E402  (the learning benchmark's recordings and conditions)

CONDITIONS = ("snr6", "snr0", "snr-6", "target_shift")
MODELS = {"ours": "normal_only", "dcase_ae": "dcase2020_ae"}  # trained: name -> preset
COLUMNS = (*MODELS, "logmel_gaussian")
AE_SETTINGS = ["data.batch_size=64"]  # enough steps for the baseline on a few hundred clips (see above)


def condition_split(out: str, condition: str, seed: int) -> str:
    """Writes (once) and returns the normal-only split manifest both models use."""
    from pump_keras.data.index import index_dataset
    from pump_keras.data.split import split_normal_only, write_manifest

    path = os.path.join(out, "splits", f"{condition}-seed{seed}.csv")
    if not os.path.exists(path):
        if condition == "target_shift":
            splits = split_normal_only(index_dataset(dcase2021_folder(out, seed)), learning.SPLIT_RATIOS, seed=seed)
            splits["test"] = [r for r in splits["test"] if r.domain == "target"]
        else:
            snr_db, _ = learning.CONDITIONS[condition]
            records = index_dataset(learning.data_folder(out, snr_db, seed))
            splits = split_normal_only(records, learning.SPLIT_RATIOS, seed=seed)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_manifest(path, splits)
    return path


def dcase2021_folder(out: str, seed: int) -> str:
    """The generator's DCASE 2021-style tree (0 dB, the learning benchmark's counts), written once."""
    from pump_keras.config import SyntheticConfig
    from pump_keras.data.synthetic import generate_dataset

    folder = os.path.join(out, "data", f"dcase2021-seed{seed}")
    marker = os.path.join(folder, "done.json")
    if not os.path.exists(marker):
        generate_dataset(folder, SyntheticConfig(**learning.SYNTHETIC, snr_db=(0.0,), seed=seed, channels=1,
                                                 layout="dcase2021"))
        with open(marker, "w", encoding="utf-8") as handle:
            json.dump({"seed": seed, "layout": "dcase2021"}, handle)
    return folder


def train_model(out: str, condition: str, seed: int, model: str, user_set, log) -> dict:
    """Per-id test AUC and pAUC of one model on one condition and seed (trained once, then read back)."""
    run_dir = os.path.join(out, "runs", condition, model, f"seed{seed}")
    settings = list(user_set) if model == "ours" else list(AE_SETTINGS)
    metrics = learning.trained_metrics(run_dir, MODELS[model], lambda: [
        *settings, f"data.split_file={condition_split(out, condition, seed)}", f"train.seed={seed}"],
        f"{condition} seed {seed} {model}", log)
    return {group: {"auc": m["auc"], "pauc": m["pauc"]} for group, m in metrics["test_per_machine_id"].items()}


def logmel_gaussian(out: str, condition: str, seed: int) -> dict:
    """Per-id test AUC and pAUC of the simple normal-only baseline (`normal_gaussian_baseline` on log-mel statistics)."""
    from pump_keras.config import preset
    from pump_keras.data.index import machine_group
    from pump_keras.data.split import read_manifest
    from pump_keras.evaluation.baselines import logmel_features, normal_gaussian_baseline
    from pump_keras.evaluation.metrics import partial_auc, roc_auc

    splits = read_manifest(condition_split(out, condition, seed))
    features = {name: logmel_features(splits[name], preset("normal_only").features, os.path.join(
        out, "logmel", f"{condition}-seed{seed}-{name}.npz")) for name in ("train", "test")}
    machines = {name: [machine_group(r) for r in splits[name]] for name in ("train", "test")}
    scores = normal_gaussian_baseline(features["train"], machines["train"], features["test"], machines["test"])
    labels = [r.label for r in splits["test"]]
    result = {}
    for group in sorted(set(machines["test"])):
        own = [i for i, machine in enumerate(machines["test"]) if machine == group]
        result[group] = {"auc": roc_auc([labels[i] for i in own], scores[own]),
                         "pauc": partial_auc([labels[i] for i in own], scores[own])}
    return result


def mean_over_ids(result: dict, key: str) -> float:
    return statistics.mean(m[key] for m in result.values())


def mean_std(values) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} +- {statistics.stdev(values):.3f}"


def table(results: dict, conditions) -> str:
    """Per condition: AUC and pAUC of both models (means over ids; mean +- std over seeds)."""
    lines = ["| condition | " + " | ".join(f"{m} AUC | {m} pAUC" for m in COLUMNS) + " | AUC gain over dcase_ae |",
             "| --- " * (2 * len(COLUMNS) + 2) + "|"]
    for condition in conditions:
        cells = []
        for model in COLUMNS:
            for key in ("auc", "pauc"):
                cells.append(mean_std([mean_over_ids(r, key) for r in results[condition][model]]))
        gain = statistics.mean(mean_over_ids(o, "auc") - mean_over_ids(b, "auc") for o, b in zip(
            results[condition]["ours"], results[condition]["dcase_ae"]))
        lines.append(f"| {condition} | " + " | ".join(cells) + f" | {gain:+.3f} |")
    return "\n".join(lines)


def per_id(results: dict, conditions) -> dict:
    """Mean AUC per (condition, id) of each model, over seeds."""
    rows = {}
    for condition in conditions:
        groups = sorted(results[condition]["ours"][0])
        for group in groups:
            rows[f"{condition} {group}"] = {model: statistics.mean(r[group]["auc"] for r in results[condition][model])
                                            for model in COLUMNS}
    return rows


def main(argv=None) -> int:
    """Runs the matrix; prints the tables and `auc_gain_vs_dcase_ae`."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/normal-only")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--conditions", default=",".join(CONDITIONS))
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override for ours (repeatable)")
    parser.add_argument("--small", action="store_true", help="iterate: 0 dB, one seed")
    args = parser.parse_args(argv)
    conditions, seeds = args.conditions.split(","), args.seeds
    if args.small:
        conditions, seeds = ["snr0"], 1
    unknown = [c for c in conditions if c not in CONDITIONS]
    if unknown:
        print(f"error: unknown condition(s) {unknown}; known: {', '.join(CONDITIONS)}", file=sys.stderr)
        return 2
    log = lambda message: print(message, flush=True)  # noqa: E731
    started = time.perf_counter()
    results = {c: {m: [] for m in COLUMNS} for c in conditions}
    for seed in range(seeds):
        for condition in conditions:
            for model in MODELS:
                results[condition][model].append(train_model(args.out, condition, seed, model, args.set, log))
            results[condition]["logmel_gaussian"].append(logmel_gaussian(args.out, condition, seed))
    rows = per_id(results, conditions)
    worse = [name for name, row in rows.items() if row["ours"] < row["dcase_ae"]]
    text = (f"# Normal-only benchmark: test AUC / pAUC (means over ids), mean +- std over {seeds} seed(s)\n\n"
            f"ours: normal_only preset {' '.join(args.set) or '(no overrides)'}\n\n" + table(results, conditions)
            + "\n\n| condition, id | " + " | ".join(f"{m} AUC" for m in COLUMNS) + " |\n"
            + "| --- " * (len(COLUMNS) + 1) + "|\n"
            + "\n".join(f"| {name} | " + " | ".join(f"{row[m]:.3f}" for m in COLUMNS) + " |"
                        for name, row in rows.items())
            + "\n")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.md"), "w", encoding="utf-8") as handle:
        handle.write(text)
    print(text)
    print(f"ids where ours is worse: {', '.join(worse) or 'none'}")
    print(f"wall time {time.perf_counter() - started:.0f} s")
    behind = [name for name, row in rows.items() if row["ours"] < row["logmel_gaussian"]]
    print(f"ids where ours is worse than logmel_gaussian: {', '.join(behind) or 'none'}")
    gain = statistics.mean(row["ours"] - row["logmel_gaussian"] for row in rows.values())
    print(f"auc_gain_vs_logmel_gaussian={gain:.2f}")
    gain = statistics.mean(row["ours"] - row["dcase_ae"] for row in rows.values())
    print(f"auc_gain_vs_dcase_ae={gain:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
