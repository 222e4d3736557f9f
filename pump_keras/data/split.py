"""Train/val/test splits of indexed clips, and their CSV manifest.

Each recording goes to the split its own hash picks: a hash of (split seed,
clip key) mapped to [0, 1) and cut at the cumulative ratios. A recording's
split therefore depends on the seed, the ratios and its clip key alone: not
on which other files exist, the input order, the SNR filter or other ids.
Every record of one recording (the same clip in the 6, 0 and -6 dB folders)
shares its clip key, so it lands in one split, and pretraining on some SNRs
and testing on another cannot leak, even when the folders hold different
files.

Strata of (machine, machine_id, label) are kept as far as a hash allows: in
large strata the ratios hold up to sampling noise. Only a stratum so small
that a split with a nonzero ratio would get none of its recordings is
repaired: the recording of a split with one to spare whose hash lies nearest
the empty split's range moves there.
"""

from __future__ import annotations

import collections
import csv
import hashlib
import io
import math
import os
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from pump_keras.data.index import LABEL_NAMES, ClipRecord
from pump_keras.errors import ManifestError, SplitError
from pump_keras.files import atomic_write_bytes

SPLITS = ("train", "val", "test")
MANIFEST_COLUMNS = ("split", "path", "label", "machine", "machine_id", "snr_db", "clip_key")
# Written always, read where present (manifests written before they existed lack them).
OPTIONAL_COLUMNS = ("subset", "domain", "attributes", "id_kind")

_HASH_BYTES = 8




def split_records(
    records: Iterable[ClipRecord],
    ratios: Sequence[float] = (0.7, 0.2, 0.1),
    seed: int = 0,
    require_both_classes: bool = True,
) -> Dict[str, List[ClipRecord]]:
    """Splits `records` into "train", "val" and "test", each sorted by path.

    Each clip key goes to `split_of_key(seed, key, ratios)`; then, within
    each (machine, machine_id, label) stratum, a split with a nonzero ratio
    that got no key takes the key nearest its range from a split holding at
    least two (see the module docstring).

    Args:
        records: the clips, as from `index_dataset`.
        ratios: train/val/test fractions, non-negative and summing to 1.
        seed: the split seed, part of every key's hash.
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
        for name, chosen in _assign_stratum(sorted(keys), seed, ratios).items():
            for key in chosen:
                splits[name].extend(keys[key])
    for name in SPLITS:
        splits[name].sort(key=lambda r: (r.path, r.clip_key))
    if require_both_classes:
        check_both_classes(splits, ratios)
    return splits


def split_normal_only(
    records: Iterable[ClipRecord],
    ratios: Sequence[float] = (0.7, 0.2, 0.1),
    seed: int = 0,
) -> Dict[str, List[ClipRecord]]:
    """The normal-only (DCASE) protocol: train and val hold normal clips only.

    Where the records carry the dataset's own partition (DCASE `train/` and
    `test/`), it is used as given: the official test clips are the test
    split, and the official training clips are cut into train and val at the
    ratio of `ratios[0]` to `ratios[1]` (the DCASE 2020 baseline holds out
    10 %). Otherwise (MIMII, plain folders) the normal recordings are split
    at `ratios` by `split_records`, grouped by clip key as ever, and every
    abnormal clip joins the test split.

    Raises:
        SplitError: only some records carry a partition, the official
            training clips include anomalies, or a split comes out empty, or
            the test split lacks a class.
    """
    records = list(records)
    ratios = _check_ratios(ratios)
    partitioned = [r for r in records if r.subset is not None]
    if partitioned and len(partitioned) != len(records):
        loose = next(r for r in records if r.subset is None)
        raise SplitError(f"{loose.path} lies outside the dataset's train/ and test/ folders, which other "
                         "clips use; the normal-only protocol needs one or the other for every clip.")
    if partitioned:
        pool = [r for r in records if r.subset == "train"]
        anomalies = [r for r in pool if r.label != 0]
        if anomalies:
            raise SplitError(f"{anomalies[0].path} (and {len(anomalies) - 1} more) are anomalies in the "
                             "official training partition; the normal-only protocol trains on normal clips only.")
        train_share = ratios[0] + ratios[1]
        splits = split_records(pool, (ratios[0] / train_share, ratios[1] / train_share, 0.0), seed,
                               require_both_classes=False) if train_share else {name: [] for name in SPLITS}
        splits["test"] = sorted((r for r in records if r.subset == "test"), key=lambda r: (r.path, r.clip_key))
    else:
        splits = split_records([r for r in records if r.label == 0], ratios, seed, require_both_classes=False)
        splits["test"] = sorted(splits["test"] + [r for r in records if r.label != 0],
                                key=lambda r: (r.path, r.clip_key))
    _check_normal_only(splits)
    return splits


def _check_normal_only(splits: Mapping[str, Sequence[ClipRecord]]) -> None:
    """Raises unless train and val are non-empty, and test holds both classes."""
    for name in ("train", "val"):
        if not splits[name]:
            raise SplitError(f"the normal-only {name} split is empty: too few normal training "
                             "recordings, or a zero ratio for it.")
    labels = {r.label for r in splits["test"]}
    if labels != {0, 1}:
        missing = " and ".join(LABEL_NAMES[label] for label in (0, 1) if label not in labels)
        raise SplitError(f"the normal-only test split has no {missing} clips; AUC needs both.")


def key_position(seed: int, clip_key: str) -> float:
    """Where a recording falls in [0, 1): a SHA-256 hash of the split seed and its clip key."""
    digest = hashlib.sha256(f"{int(seed)}\0{clip_key}".encode("utf-8")).digest()
    return int.from_bytes(digest[:_HASH_BYTES], "big") / float(1 << (8 * _HASH_BYTES))


def split_of_key(seed: int, clip_key: str, ratios: Sequence[float]) -> str:
    """The split a recording's hash picks: the first split whose cumulative ratio exceeds its position."""
    ratios = _check_ratios(ratios)
    position = key_position(seed, clip_key)
    upper = 0.0
    for name, ratio in zip(SPLITS, ratios):
        upper += ratio
        if ratio > 0 and position < upper:
            return name
    return [name for name, ratio in zip(SPLITS, ratios) if ratio > 0][-1]


def _assign_stratum(keys: Sequence[str], seed: int, ratios: Tuple[float, ...]) -> Dict[str, List[str]]:
    """The keys of one stratum per split: by hash, then empty nonzero-ratio splits repaired."""
    chosen: Dict[str, List[str]] = {name: [] for name in SPLITS}
    for key in keys:
        chosen[split_of_key(seed, key, ratios)].append(key)
    bounds = _split_bounds(ratios)
    for name, ratio in zip(SPLITS, ratios):
        if ratio == 0 or chosen[name]:
            continue
        spare = [(key, donor) for donor in SPLITS if len(chosen[donor]) > 1 for key in chosen[donor]]
        if not spare:
            continue
        low, high = bounds[name]
        key, donor = min(spare, key=lambda item: (_distance(key_position(seed, item[0]), low, high), item[0]))
        chosen[donor].remove(key)
        chosen[name].append(key)
    return chosen


def _split_bounds(ratios: Tuple[float, ...]) -> Dict[str, Tuple[float, float]]:
    """Each split's range [low, high) of hash positions."""
    bounds, low = {}, 0.0
    for name, ratio in zip(SPLITS, ratios):
        bounds[name] = (low, low + ratio)
        low += ratio
    return bounds


def _distance(position: float, low: float, high: float) -> float:
    """How far `position` lies outside [low, high)."""
    return max(low - position, position - high, 0.0)


LEAK_EXAMPLES = 5  # recordings an error message names before "and N more"


def leaked_examples(texts: Sequence[str]) -> str:
    """The first `LEAK_EXAMPLES` of `texts` joined by "; ", then "; and N more" for the rest."""
    more = f"; and {len(texts) - LEAK_EXAMPLES} more" if len(texts) > LEAK_EXAMPLES else ""
    return "; ".join(texts[:LEAK_EXAMPLES]) + more


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
    writer.writerow(MANIFEST_COLUMNS + OPTIONAL_COLUMNS)
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
        record.subset or "",
        record.domain or "",
        record.attributes,
        record.id_kind,
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
        columns = sum(1 for key in row if key is not None)
        raise ManifestError(f"{where}: expected {columns} fields per row, as in the header.")
    split = row["split"]
    if split not in SPLITS:
        raise ManifestError(f"{where}: unknown split {split!r}; expected one of {', '.join(SPLITS)}.")
    for column in ("path", "machine", "machine_id", "clip_key"):
        if not row[column]:
            raise ManifestError(f"{where}: empty {column}.")
    if row["label"] not in ("0", "1"):
        raise ManifestError(f"{where}: label must be 0 (normal) or 1 (abnormal), got {row['label']!r}.")
    for column, allowed in (("subset", ("", "train", "test")), ("domain", ("", "source", "target")),
                            ("id_kind", ("", "id", "section"))):
        if row.get(column) not in (None, *allowed):
            raise ManifestError(f"{where}: {column} must be one of {[a for a in allowed if a]} or empty, "
                                f"got {row[column]!r}.")
    return split, ClipRecord(
        path=row["path"],
        label=int(row["label"]),
        machine=row["machine"],
        machine_id=row["machine_id"],
        snr_db=_parse_snr(where, row["snr_db"]),
        clip_key=row["clip_key"],
        subset=row.get("subset") or None,
        domain=row.get("domain") or None,
        attributes=row.get("attributes") or "",
        id_kind=row.get("id_kind") or "id",
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
    "OPTIONAL_COLUMNS",
    "SplitError",
    "ManifestError",
    "split_records",
    "split_normal_only",
    "leaked_examples",
    "key_position",
    "split_of_key",
    "check_both_classes",
    "describe_splits",
    "write_manifest",
    "read_manifest",
]
