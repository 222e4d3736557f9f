"""Train/val/test splits of indexed clips, and their CSV manifest.

The split is stratified by (machine_id, label) and grouped by clip key: every
record of one recording (the same clip in the 6, 0 and -6 dB folders) lands
in one split, so pretraining on some SNRs and testing on another cannot leak.
Each stratum is shuffled by its own generator, seeded from the split seed
and the stratum, so a key's split depends only on the seed and the keys of
its own stratum: not on the input order, the SNR filter, or other ids.
"""

from __future__ import annotations

import collections
import csv
import io
import math
import os
import zlib
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from pump_keras.data.index import LABEL_NAMES, ClipRecord
from pump_keras.wavfile import atomic_write_bytes

SPLITS = ("train", "val", "test")
MANIFEST_COLUMNS = ("split", "path", "label", "machine", "machine_id", "snr_db", "clip_key")

_TIE_DECIMALS = 9


class SplitError(ValueError):
    """A split that cannot be made as asked; the message says why."""


class ManifestError(ValueError):
    """A manifest file that cannot be read; the message names the file and line."""


def split_records(
    records: Iterable[ClipRecord],
    ratios: Sequence[float] = (0.7, 0.2, 0.1),
    seed: int = 0,
    require_both_classes: bool = True,
) -> Dict[str, List[ClipRecord]]:
    """Splits `records` into "train", "val" and "test", each sorted by path.

    Within each (machine_id, label) stratum the unique clip keys are sorted,
    shuffled with `numpy.random.default_rng`, and cut into counts from
    `n * ratios` by largest remainder (ties go to train, then val, then test).

    Args:
        records: the clips, as from `index_dataset`.
        ratios: train/val/test fractions, non-negative and summing to 1.
        seed: seed of the shuffle.
        require_both_classes: raise unless every split with a nonzero ratio
            holds both normal and abnormal clips.

    Raises:
        SplitError: bad ratios, records sharing a clip key but not a stratum,
            or (with `require_both_classes`) a split lacking a class.
    """
    ratios = _check_ratios(ratios)
    strata = _group_by_stratum(records)
    splits: Dict[str, List[ClipRecord]] = {name: [] for name in SPLITS}
    for stratum in sorted(strata):
        keys = strata[stratum]
        order = sorted(keys)
        _stratum_rng(seed, stratum).shuffle(order)
        start = 0
        for name, count in zip(SPLITS, allocate_counts(len(order), ratios)):
            for key in order[start:start + count]:
                splits[name].extend(keys[key])
            start += count
    for name in SPLITS:
        splits[name].sort(key=lambda r: (r.path, r.clip_key))
    if require_both_classes:
        check_both_classes(splits, ratios)
    return splits


def allocate_counts(n: int, ratios: Sequence[float]) -> Tuple[int, ...]:
    """Splits `n` items by `ratios` with the largest-remainder method.

    Ties between equal remainders go to the earlier split (train, val, test).
    """
    exact = [round(n * r, _TIE_DECIMALS) for r in ratios]
    counts = [math.floor(x) for x in exact]
    remainders = [x - c for x, c in zip(exact, counts)]
    order = sorted(range(len(ratios)), key=lambda i: (-round(remainders[i], _TIE_DECIMALS), i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    return tuple(counts)


def check_both_classes(splits: Mapping[str, Sequence[ClipRecord]], ratios: Sequence[float]) -> None:
    """Raises if a split with a nonzero ratio is empty or lacks a class."""
    for name, ratio in zip(SPLITS, ratios):
        clips = splits.get(name, [])
        if not clips:
            if ratio > 0:
                raise SplitError(
                    f"split {name!r} is empty although its ratio is {ratio:g}. "
                    f"Per-split counts: {describe_splits(splits)}. "
                    "Use more data or other split ratios."
                )
            continue
        labels = {r.label for r in clips}
        for label, label_name in LABEL_NAMES.items():
            if label not in labels:
                raise SplitError(
                    f"split {name!r} has no {label_name} clips. "
                    f"Per-split counts: {describe_splits(splits)}. "
                    "Use more data or other split ratios."
                )


def describe_splits(splits: Mapping[str, Sequence[ClipRecord]]) -> str:
    """Counts per split and class, e.g. "train 70 normal / 7 abnormal; ..."."""
    parts = []
    for name in SPLITS:
        counts = collections.Counter(r.label for r in splits.get(name, []))
        parts.append(f"{name} {counts[0]} normal / {counts[1]} abnormal")
    return "; ".join(parts)


def write_manifest(path, splits: Mapping[str, Iterable[ClipRecord]]) -> None:
    """Writes `splits` to a CSV file at `path` atomically.

    Columns are `MANIFEST_COLUMNS`; paths are written absolute, `snr_db`
    is empty for `None`, and `machine_id` keeps its zero padding.
    """
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown:
        raise SplitError(f"unknown split name(s) {unknown}; expected {list(SPLITS)}.")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    for name in SPLITS:
        for record in splits.get(name, []):
            writer.writerow(_manifest_row(name, record))
    atomic_write_bytes(os.fspath(path), buffer.getvalue().encode("utf-8"))


def read_manifest(path) -> Dict[str, List[ClipRecord]]:
    """The splits written by `write_manifest`, in file order.

    Raises:
        ManifestError: the file is missing, lacks a column, or a row has an
            unknown split, a bad label or SNR, an empty field, or a path
            listed twice; the message names the file and line.
    """
    path = os.fspath(path)
    splits: Dict[str, List[ClipRecord]] = {name: [] for name in SPLITS}
    seen: Dict[str, int] = {}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            _check_columns(path, reader.fieldnames)
            for row in reader:
                split, record = _parse_row(path, reader.line_num, row)
                if record.path in seen:
                    raise ManifestError(
                        f"{path}, line {reader.line_num}: {record.path} is already listed "
                        f"on line {seen[record.path]}."
                    )
                seen[record.path] = reader.line_num
                splits[split].append(record)
    except OSError as error:
        raise ManifestError(f"{path}: cannot read manifest ({error.strerror or error}).") from error
    except csv.Error as error:
        raise ManifestError(f"{path}: malformed CSV ({error}).") from error
    return splits


def _check_ratios(ratios: Sequence[float]) -> Tuple[float, float, float]:
    """Three non-negative fractions summing to 1 (renormalised exactly)."""
    values = tuple(float(r) for r in ratios)
    if len(values) != 3 or min(values) < 0 or abs(sum(values) - 1.0) > 1e-6:
        raise SplitError(
            f"ratios must be three non-negative train/val/test fractions summing to 1, got {ratios}."
        )
    total = sum(values)
    return tuple(v / total for v in values)


def _group_by_stratum(records: Iterable[ClipRecord]) -> Dict[Tuple[str, str, int], Dict[str, List[ClipRecord]]]:
    """Records grouped as {(machine, machine_id, label): {clip_key: [records]}}."""
    strata: Dict[Tuple[str, str, int], Dict[str, List[ClipRecord]]] = collections.defaultdict(dict)
    stratum_of_key: Dict[str, Tuple[str, str, int]] = {}
    for record in records:
        stratum = (record.machine, record.machine_id, int(record.label))
        previous = stratum_of_key.setdefault(record.clip_key, stratum)
        if previous != stratum:
            raise SplitError(
                f"clip key {record.clip_key!r} has records of machine/id/label {previous} "
                f"and {stratum} (e.g. {record.path}); one recording must have one id and label."
            )
        strata[stratum].setdefault(record.clip_key, []).append(record)
    return strata


def _stratum_rng(seed: int, stratum: Tuple[str, str, int]) -> np.random.Generator:
    """A generator seeded from the split seed and a stable hash of the stratum."""
    machine, machine_id, label = stratum
    stratum_hash = zlib.crc32(f"{machine}/{machine_id}/{label}".encode("utf-8"))
    return np.random.default_rng([int(seed), stratum_hash])


def _manifest_row(split: str, record: ClipRecord) -> List[str]:
    """One CSV row for `record`."""
    snr = "" if record.snr_db is None else repr(float(record.snr_db))
    return [
        split,
        os.path.abspath(record.path),
        str(int(record.label)),
        record.machine,
        record.machine_id,
        snr,
        record.clip_key,
    ]


def _check_columns(path: str, fieldnames: Optional[Sequence[str]]) -> None:
    """Raises unless the header row holds every manifest column."""
    if not fieldnames:
        raise ManifestError(f"{path}, line 1: empty manifest (no header row).")
    missing = [c for c in MANIFEST_COLUMNS if c not in fieldnames]
    if missing:
        raise ManifestError(
            f"{path}, line 1: missing column(s) {', '.join(missing)}; "
            f"expected {','.join(MANIFEST_COLUMNS)}."
        )


def _parse_row(path: str, line: int, row: Dict[str, Optional[str]]) -> Tuple[str, ClipRecord]:
    """The split name and record of one manifest row."""
    where = f"{path}, line {line}"
    if None in row or any(row.get(c) is None for c in MANIFEST_COLUMNS):
        raise ManifestError(f"{where}: expected {len(MANIFEST_COLUMNS)} fields per row.")
    split = row["split"]
    if split not in SPLITS:
        raise ManifestError(f"{where}: unknown split {split!r}; expected one of {', '.join(SPLITS)}.")
    for column in ("path", "machine", "machine_id", "clip_key"):
        if not row[column]:
            raise ManifestError(f"{where}: empty {column}.")
    if row["label"] not in ("0", "1"):
        raise ManifestError(f"{where}: label must be 0 (normal) or 1 (abnormal), got {row['label']!r}.")
    return split, ClipRecord(
        path=row["path"],
        label=int(row["label"]),
        machine=row["machine"],
        machine_id=row["machine_id"],
        snr_db=_parse_snr(where, row["snr_db"]),
        clip_key=row["clip_key"],
    )


def _parse_snr(where: str, text: str) -> Optional[float]:
    """The SNR of a manifest field: empty is `None`, else a finite float."""
    if text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ManifestError(f"{where}: snr_db must be a number or empty, got {text!r}.")
    return value


__all__ = [
    "SPLITS",
    "MANIFEST_COLUMNS",
    "SplitError",
    "ManifestError",
    "split_records",
    "allocate_counts",
    "check_both_classes",
    "describe_splits",
    "write_manifest",
    "read_manifest",
]
