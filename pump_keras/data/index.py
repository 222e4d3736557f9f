"""Finding the recordings of a MIMII, DCASE or plain labelled tree on disk.

These layouts are recognised, matched on each file's absolute path parts:

* MIMII: ``<snr>_dB_<machine>/<machine>/id_XX/{normal,abnormal}/NAME.wav``
  (e.g. ``-6_dB_pump/pump/id_00/abnormal/00000012.wav``).
* A MIMII archive unpacked without its SNR folder:
  ``<machine>/id_XX/{normal,abnormal}/NAME.wav``, the SNR taken from the
  nearest folder above named like ``-6_dB_pump``, ``min6dB``, ``6dB`` or
  ``0_dB``, else from `folder_snr_db`, else unknown (`None`).
* Plain folders of one's own recordings: ``<any>/{normal,abnormal}/NAME.wav``;
  the machine is ``<any>`` and the id 00 unless ``<machine>/id_XX/`` folders
  name them (this is the layout above, SNR included).
* DCASE 2020 Task 2: ``{normal,anomaly}_id_XX_NNNNNNNN.wav``, flat or under
  ``<machine>/train/`` and ``<machine>/test/`` folders (``dev_data/pump/...``).
* DCASE 2021-2023 Task 2:
  ``<machine>/{train,test,source_test,target_test}/`` holding
  ``section_XX_{source,target}_{train,test}_{normal,anomaly}_NNNN[_ATTRIBUTES].wav``:
  the section takes the place of the machine id, and the domain, the
  official train/test partition and the attributes come from the name.
* Evaluation sets without labels: ``id_XX_NNNNNNNN.wav`` (2020) and
  ``section_XX_NNNN.wav`` (2021 on) under a ``test/`` folder; their clips are
  `UNLABELLED`, and only `index_dataset(..., allow_unlabelled=True)` takes
  them (scoring for the DCASE result files; training and evaluation need labels).

Every clip gets a `clip_key` naming the recording independently of its SNR
folder, so that the splitter can keep the same recording (mixed at 6, 0 and
-6 dB) out of two splits at once.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from pump_keras.audio.wavfile import read_wav_header, special_file_kind
from pump_keras.data.resample import resample_command
from pump_keras.errors import DatasetError
from pump_keras.files import wav_files_under

KNOWN_MACHINES = ("pump", "fan", "valve", "slider", "ToyCar", "ToyConveyor", "ToyTrain", "gearbox", "bearing",
                  "bandsaw", "grinder", "shaker", "ToyDrone", "ToyNscale", "ToyTank", "Vacuum")
LABEL_NAMES = {0: "normal", 1: "abnormal"}
UNLABELLED = -1  # the label of an evaluation-set clip whose class is not published

MIMII_LAYOUT = "<snr>_dB_<machine>/<machine>/id_XX/{normal,abnormal}/NAME.wav"
MIMII_ARCHIVE_LAYOUT = "[<snr folder>/]<machine>/id_XX/{normal,abnormal}/NAME.wav"
PLAIN_LAYOUT = "<any>/{normal,abnormal}/NAME.wav"
DCASE_LAYOUT = "[<machine>/{train,test}/]{normal,anomaly}_id_XX_NNNNNNNN.wav"
DCASE2021_LAYOUT = ("<machine>/{train,test,source_test,target_test}/"
                    "section_XX_{source,target}_{train,test}_{normal,anomaly}_NNNN[_ATTRIBUTES].wav")
LAYOUTS_TEXT = (
    f"  MIMII: {MIMII_LAYOUT} (e.g. -6_dB_pump/pump/id_00/normal/00000000.wav);\n"
    f"  a MIMII archive unpacked without its SNR folder: {MIMII_ARCHIVE_LAYOUT}, the SNR from a folder "
    "above named like -6_dB_pump, min6dB, 6dB or 0_dB, or from data.folder_snr_db;\n"
    f"  your own recordings: {PLAIN_LAYOUT} (machine and id folders optional);\n"
    f"  DCASE 2020 Task 2: {DCASE_LAYOUT} (e.g. pump/train/normal_id_00_00000000.wav);\n"
    f"  DCASE 2021-2023 Task 2: {DCASE2021_LAYOUT}\n"
    "    (e.g. pump/train/section_00_source_train_normal_0000_serial_no_000_water.wav)."
)
DEFAULT_MACHINE_ID = "00"

_SNR_DIR = re.compile(r"^(min|[+-])?(\d+(?:\.\d+)?)_?dB(?:_(.+))?$", re.IGNORECASE)
_ID_DIR = re.compile(r"^id_(\d+)$")
_DCASE_NAME = re.compile(r"^(?:(normal|anomaly)_)?id_(\d+)_(\d+)\.wav$", re.IGNORECASE)
_DCASE2021_NAME = re.compile(
    r"^section_(\d+)_(?:(source|target)_(train|test)_(normal|anomaly)_)?(\d+)(?:_(.+?))?\.wav$", re.IGNORECASE)
_MIMII_CLASSES = {"normal": 0, "abnormal": 1}
_DCASE_CLASSES = {"normal": 0, "anomaly": 1}
# The folders of the official partition, and the subset each one is.
_DCASE_SUBSETS = {"train": "train", "test": "test", "source_test": "test", "target_test": "test"}
_MAX_EXAMPLES = 3



@dataclasses.dataclass(frozen=True)
class ClipRecord:
    """One recording on disk.

    Attributes:
        path: absolute path of the WAV file.
        label: 0 for normal, 1 for abnormal (MIMII) / anomaly (DCASE),
            `UNLABELLED` for an evaluation-set clip.
        machine: machine type, e.g. "pump".
        machine_id: zero-padded machine id, e.g. "00" (the section number in
            DCASE 2021-2023, see `id_kind`).
        snr_db: the MIMII SNR folder in dB, `None` for DCASE files.
        clip_key: the recording independent of its SNR folder.
        subset: the dataset's own partition, "train" or "test" (DCASE), or
            `None` where the layout has none (MIMII, plain folders).
        domain: "source" or "target" (DCASE 2021-2023), else `None`.
        attributes: the operating attributes in a DCASE 2021-2023 file name
            (e.g. "serial_no_000_water"), else "".
        id_kind: "id" (machine ids) or "section" (DCASE 2021-2023 sections).
    """

    path: str
    label: int
    machine: str
    machine_id: str
    snr_db: Optional[float]
    clip_key: str
    subset: Optional[str] = None
    domain: Optional[str] = None
    attributes: str = ""
    id_kind: str = "id"


def index_dataset(
    root,
    snr_db: Optional[Iterable[float]] = None,
    machine_ids: Optional[Iterable[str]] = None,
    folder_snr_db: Optional[float] = None,
    allow_unlabelled: bool = False,
) -> List[ClipRecord]:
    """All recordings under `root`, sorted by path.

    Args:
        root: a directory holding a tree in one of the layouts (any level of it).
        snr_db: keep only these SNRs in dB; each must exist in the tree.
        machine_ids: keep only these machine ids (e.g. `("00", "02")`).
        folder_snr_db: the SNR of `normal`/`abnormal` folders with no folder
            above them naming one (an unpacked MIMII archive); `None` leaves
            it unknown.
        allow_unlabelled: take evaluation-set clips whose class is not
            published (label `UNLABELLED`); by default they are an error,
            since training and evaluation need labels.

    Raises:
        DatasetError: `root` is missing or not a directory, holds no `.wav`
            files, holds `.wav` names that are not regular files (a named
            pipe, a device), holds `.wav` files in no layout, mixes DCASE
            file names with `normal`/`abnormal` folders, holds one recording
            twice, holds unlabelled clips without `allow_unlabelled`, or a
            filter matches nothing.
    """
    root_path = _check_root(root)
    paths = wav_files_under(root_path)
    if not paths:
        raise DatasetError(f"{root_path}: no .wav files found under this directory.")
    _check_regular_files(root_path, paths)
    records, unknown = _parse_all(paths, folder_snr_db)
    if unknown:
        raise DatasetError(_unknown_files_message(root_path, unknown))
    _check_single_layout(root_path, records)
    if not allow_unlabelled:
        _check_labelled(root_path, records)
    _check_no_duplicates(root_path, records)
    records = _filter_snr(root_path, records, snr_db)
    records = _filter_machine_ids(root_path, records, machine_ids)
    return sorted(records, key=lambda r: r.path)


def parse_clip_path(path, folder_snr_db: Optional[float] = None) -> Optional[ClipRecord]:
    """The record for one WAV path (made absolute), or `None` if no layout matches.

    `folder_snr_db` is the SNR of class folders that no folder above names.
    """
    path = os.path.abspath(os.fspath(path))
    parts = Path(path).parts
    return (_parse_class_folder(path, parts, folder_snr_db) or _parse_dcase(path, parts)
            or _parse_dcase2021(path, parts))


def check_audio_headers(records: Sequence[ClipRecord], sample_rate: Optional[int] = None,
                        root: Optional[str] = None) -> dict:
    """Reads every file's WAV header (not its samples) and checks the rates agree.

    Args:
        records: the clips to check, as from `index_dataset`.
        sample_rate: the rate every file must have, in Hz; `None` only
            requires the files to agree with one another.
        root: the dataset folder the records come from; a rate error
            prints the exact command that converts it (default: the
            deepest folder holding every file).

    Returns:
        A summary: `files`, `sample_rate`, `channels` (channel count ->
        number of files), `encodings` (e.g. "PCM 16-bit" -> number of files)
        and `total_seconds`.

    Raises:
        WavFormatError: a file's header is unreadable (the message names it).
        DatasetError: no records, a file has vanished, or sample rates differ
            within the dataset or from `sample_rate`.
    """
    if not records:
        raise DatasetError("check_audio_headers: no records to check.")
    by_rate: Dict[int, List[str]] = collections.defaultdict(list)
    channels: Dict[int, int] = collections.Counter()
    encodings: Dict[str, int] = collections.Counter()
    total_seconds = 0.0
    for record in records:
        header = _read_header(record.path)
        by_rate[header.sample_rate].append(record.path)
        channels[header.channels] += 1
        encodings[header.encoding] += 1
        total_seconds += header.seconds
    _check_sample_rates(by_rate, sample_rate, root or _common_folder(records))
    return {
        "files": len(records),
        "sample_rate": next(iter(by_rate)),
        "channels": dict(sorted(channels.items())),
        "encodings": dict(sorted(encodings.items())),
        "total_seconds": total_seconds,
    }


def machine_group(record: ClipRecord) -> str:
    """The machine a clip was recorded on, as "pump/id_00" ("pump/section_00" in DCASE 2021-2023)."""
    return f"{record.machine}/{record.id_kind}_{record.machine_id}"


def summarize(records: Iterable[ClipRecord]) -> Dict[Tuple[Optional[float], str, str, int], int]:
    """Clip counts per `(snr_db, machine, machine_id, label)`, in sorted order."""
    counts = collections.Counter((r.snr_db, r.machine, r.machine_id, r.label) for r in records)
    return {key: counts[key] for key in sorted(counts, key=_summary_sort_key)}


def format_summary(records: Iterable[ClipRecord]) -> str:
    """A printable table: one row per (SNR, machine, machine id), normal/abnormal (and unlabelled) counts."""
    columns = {0: "normal", 1: "abnormal", UNLABELLED: "unlabelled"}
    rows: Dict[Tuple[Optional[float], str, str], Dict[int, int]] = {}
    for (snr, machine, machine_id, label), count in summarize(records).items():
        counts = rows.setdefault((snr, machine, machine_id), collections.Counter())
        counts[label] += count
    shown = [label for label in columns if label != UNLABELLED or any(c[UNLABELLED] for c in rows.values())]
    width = max([len("machine")] + [len(machine) for _, machine, _ in rows])
    header = "  ".join(f"{columns[label]:>8}" for label in shown)
    lines = [f"{'snr_db':>7}  {'machine':<{width}}  {'id':>3}  {header}"]
    totals = collections.Counter()
    for (snr, machine, machine_id), counts in rows.items():
        snr_text = "-" if snr is None else f"{snr:g}"
        lines.append(f"{snr_text:>7}  {machine:<{width}}  {machine_id:>3}  "
                     + "  ".join(f"{counts[label]:>8}" for label in shown))
        totals.update(counts)
    lines.append(f"{'total':>7}  {'':<{width}}  {'':>3}  " + "  ".join(f"{totals[label]:>8}" for label in shown))
    return "\n".join(lines)


def normalize_machine_id(value) -> str:
    """A machine id as a zero-padded string: 0, "0", "id_00" and "section_00" give "00"."""
    text = str(value).strip()
    for prefix in ("id_", "section_"):
        if text.startswith(prefix):
            text = text[len(prefix):]
    if not text.isdigit():
        raise DatasetError(f"machine id must be a number such as '00', got {value!r}.")
    return f"{int(text):02d}"


def _check_root(root) -> Path:
    """The absolute root path, after checking it is an existing directory."""
    root_path = Path(os.path.abspath(os.fspath(root)))
    if not root_path.exists():
        raise DatasetError(f"{root_path}: dataset directory does not exist.")
    if not root_path.is_dir():
        raise DatasetError(f"{root_path}: dataset root is not a directory.")
    return root_path


def _examples(lines: Sequence[str]) -> str:
    """The first few of `lines`, indented one per line, and how many more there are."""
    shown = "\n".join(f"  {line}" for line in lines[:_MAX_EXAMPLES])
    return shown + (f"\n  ... and {len(lines) - _MAX_EXAMPLES} more" if len(lines) > _MAX_EXAMPLES else "")


def _check_regular_files(root: Path, paths: Sequence[str]) -> None:
    """Raises for `.wav` names that are not regular files (a named pipe would hang any reader)."""
    special = [(path, kind) for path in paths for kind in [special_file_kind(path)] if kind]
    if special:
        examples = _examples([f"{os.path.relpath(p, root)}: {kind}" for p, kind in special])
        raise DatasetError(
            f"{root}: {len(special)} .wav name(s) are not regular files (none was opened):\n"
            f"{examples}\nRemove them or move them out of the dataset folder."
        )


def _parse_all(paths: Iterable[str], folder_snr_db: Optional[float]) -> Tuple[List[ClipRecord], List[str]]:
    """Records for the paths that match a layout, and the paths that do not."""
    records, unknown = [], []
    for path in paths:
        record = parse_clip_path(path, folder_snr_db)
        if record is None:
            unknown.append(path)
        else:
            records.append(record)
    return records, unknown


def _parse_class_folder(path: str, parts: Tuple[str, ...], folder_snr_db: Optional[float]) -> Optional[ClipRecord]:
    """The record of a file in a `normal`/`abnormal` folder (MIMII, its archives, plain folders), or `None`."""
    if len(parts) < 3 or parts[-2] not in _MIMII_CLASSES or not parts[-1].lower().endswith(".wav"):
        return None
    class_dir, name = parts[-2], parts[-1]
    id_match = _ID_DIR.match(parts[-3])
    if id_match and len(parts) >= 5:
        machine, machine_id, above = parts[-4], f"{int(id_match.group(1)):02d}", parts[:-4]
    else:
        machine, machine_id, above = parts[-3], DEFAULT_MACHINE_ID, parts[:-3]
    snr_db = folder_snr_db
    for depth, folder in enumerate(reversed(above)):
        snr_match = _SNR_DIR.match(folder)
        if snr_match:
            sign, value, named_machine = snr_match.groups()
            if depth == 0 and named_machine is not None and named_machine != machine:
                return None  # e.g. 0_dB_fan/pump/...: the SNR folder names another machine
            snr_db = -float(value) if (sign or "").lower() in ("min", "-") else float(value)
            break
    stem = name[: -len(".wav")]
    return ClipRecord(
        path=path,
        label=_MIMII_CLASSES[class_dir],
        machine=machine,
        machine_id=machine_id,
        snr_db=None if snr_db is None else float(snr_db),
        clip_key=f"{machine}/id_{machine_id}/{class_dir}/{stem}",
    )


def _parse_dcase(path: str, parts: Tuple[str, ...]) -> Optional[ClipRecord]:
    """The record of a DCASE 2020 path, or `None`."""
    match = _DCASE_NAME.match(parts[-1])
    if match is None or len(parts) < 2:
        return None
    class_name = (match.group(1) or "unlabelled").lower()
    machine_id = f"{int(match.group(2)):02d}"
    folder = parts[-2] if parts[-2] in _DCASE_SUBSETS else "-"
    machine = _dcase_machine(parts[:-1], folder != "-")
    return ClipRecord(
        path=path,
        label=_DCASE_CLASSES.get(class_name, UNLABELLED),
        machine=machine,
        machine_id=machine_id,
        snr_db=None,
        clip_key=f"{machine}/id_{machine_id}/{folder}/{class_name}/{match.group(3)}",
        subset=_DCASE_SUBSETS.get(folder),
    )


def _parse_dcase2021(path: str, parts: Tuple[str, ...]) -> Optional[ClipRecord]:
    """The record of a DCASE 2021-2023 path (section, domain and attributes in the name), or `None`."""
    match = _DCASE2021_NAME.match(parts[-1])
    if match is None or len(parts) < 2:
        return None
    section, domain, subset, class_name, number, attributes = match.groups()
    folder = parts[-2] if parts[-2] in _DCASE_SUBSETS else "-"
    subset = subset.lower() if subset else _DCASE_SUBSETS.get(folder)
    class_name = (class_name or "unlabelled").lower()
    machine = _dcase_machine(parts[:-1], folder != "-")
    section = f"{int(section):02d}"
    domain = domain.lower() if domain else None
    return ClipRecord(
        path=path,
        label=_DCASE_CLASSES.get(class_name, UNLABELLED),
        machine=machine,
        machine_id=section,
        snr_db=None,
        clip_key=f"{machine}/section_{section}/{domain or '-'}_{subset or '-'}/{class_name}/{number}",
        subset=subset,
        domain=domain,
        attributes=attributes or "",
        id_kind="section",
    )


def _dcase_machine(folders: Tuple[str, ...], has_subset: bool) -> str:
    """The machine of a DCASE file from the folders above it.

    With a train/test folder, the folder above it (reduced to a known machine
    name when it contains one, e.g. "dcase2020-pump" -> "pump"); otherwise the
    nearest folder containing a known machine name; otherwise the parent.
    """
    if has_subset and len(folders) >= 2:
        above = folders[-2]
        return _known_machine_in(above) or above
    for folder in reversed(folders):
        known = _known_machine_in(folder)
        if known:
            return known
    return folders[-1]


def _known_machine_in(folder: str) -> Optional[str]:
    """The known machine name that `folder` is or contains as a word, if any."""
    words = {w.lower() for w in re.split(r"[^A-Za-z0-9]+", folder) if w}
    for machine in KNOWN_MACHINES:
        if machine.lower() in words:
            return machine
    return None


def _unknown_files_message(root: Path, unknown: Sequence[str]) -> str:
    """Describes `.wav` files that follow no known layout, and the layouts there are."""
    examples = _examples([os.path.relpath(p, root) for p in unknown])
    return (
        f"{root}: {len(unknown)} .wav file(s) follow neither known layout, e.g.:\n"
        f"{examples}\n"
        f"The layouts are:\n{LAYOUTS_TEXT}"
    )


def _is_dcase(record: ClipRecord) -> bool:
    """Whether a record came from a DCASE file name (its class is in the name, not a folder)."""
    name = os.path.basename(record.path)
    return (_DCASE_NAME.match(name) is not None or _DCASE2021_NAME.match(name) is not None) and \
        os.path.basename(os.path.dirname(record.path)) not in _MIMII_CLASSES


def _check_labelled(root: Path, records: Sequence[ClipRecord]) -> None:
    """Raises if some clips carry no normal/anomaly label (a DCASE evaluation set)."""
    unlabelled = [r.path for r in records if r.label == UNLABELLED]
    if unlabelled:
        examples = _examples([os.path.relpath(p, root) for p in unlabelled])
        raise DatasetError(
            f"{root}: {len(unlabelled)} .wav file(s) carry no normal/anomaly label in their name "
            f"(a DCASE evaluation set), e.g.:\n{examples}\n"
            "Training and evaluation need labelled clips: point --data-dir at a development set, "
            "and score evaluation clips with `python -m pump_keras.predict`."
        )


def _check_single_layout(root: Path, records: Sequence[ClipRecord]) -> None:
    """Raises if DCASE files are mixed with `normal`/`abnormal` folders under one root."""
    dcase = [r.path for r in records if _is_dcase(r)]
    folders = [r.path for r in records if not _is_dcase(r)]
    if folders and dcase:
        raise DatasetError(
            f"{root}: mixes {len(folders)} files in normal/abnormal folders (MIMII layout) and "
            f"{len(dcase)} DCASE-layout files "
            f"(e.g. {os.path.relpath(folders[0], root)} and {os.path.relpath(dcase[0], root)}); "
            "point the dataset root at one of them."
        )


def _check_no_duplicates(root: Path, records: Sequence[ClipRecord]) -> None:
    """Raises if one recording (same clip key and SNR) appears at two paths."""
    seen: Dict[Tuple[str, Optional[float]], str] = {}
    for record in records:
        key = (record.clip_key, record.snr_db)
        if key in seen:
            raise DatasetError(
                f"{root}: recording {record.clip_key!r} (SNR {snr_text(record.snr_db)}) "
                f"appears twice: {seen[key]} and {record.path}; remove the copy."
            )
        seen[key] = record.path


def _filter_snr(root: Path, records: List[ClipRecord], snr_db) -> List[ClipRecord]:
    """The records at the requested SNRs; raises for an SNR with no files."""
    if snr_db is None:
        return records
    wanted = {float(v) for v in snr_db}
    present = {r.snr_db for r in records}
    missing = sorted(wanted - present)
    if missing:
        raise DatasetError(
            f"{root}: no files at SNR {', '.join(map(snr_text, missing))}; "
            f"the dataset has SNR {_describe_snrs(present)}."
        )
    return [r for r in records if r.snr_db in wanted]


def _filter_machine_ids(root: Path, records: List[ClipRecord], machine_ids) -> List[ClipRecord]:
    """The records of the requested machine ids; raises for an id with no files."""
    if machine_ids is None:
        return records
    if isinstance(machine_ids, (str, int)):
        machine_ids = (machine_ids,)
    wanted = {normalize_machine_id(v) for v in machine_ids}
    present = {r.machine_id for r in records}
    missing = sorted(wanted - present)
    if missing:
        raise DatasetError(
            f"{root}: no files for machine id {', '.join(missing)}"
            f"; the selected files have ids {', '.join(sorted(present))}."
        )
    return [r for r in records if r.machine_id in wanted]


def _describe_snrs(snrs: Iterable[Optional[float]]) -> str:
    """Readable list of SNR values, "none" for DCASE's missing SNR."""
    snrs = set(snrs)
    values = sorted(v for v in snrs if v is not None)
    text = ", ".join(map(snr_text, values))
    if None in snrs:
        text = (text + ", " if text else "") + (
            "none (DCASE layout has no SNR folders; folders of recordings with no folder above naming "
            "an SNR get data.folder_snr_db)")
    return text


def snr_text(snr_db: Optional[float], missing: str = "none") -> str:
    """An SNR as text, `"-6 dB"`; `missing` for recordings without one (DCASE)."""
    return missing if snr_db is None else f"{snr_db:g} dB"


def _read_header(path: str):
    """The WAV header of `path`; a vanished or unreadable file is a DatasetError."""
    try:
        return read_wav_header(path)
    except OSError as error:
        raise DatasetError(f"{path}: cannot read file ({error.strerror or error}).") from error


def _common_folder(records: Sequence[ClipRecord]) -> str:
    """The deepest folder holding every record's file."""
    return os.path.commonpath([os.path.dirname(os.path.abspath(r.path)) for r in records])


def _check_sample_rates(by_rate: Dict[int, List[str]], expected: Optional[int], root: str) -> None:
    """Raises if the files have several sample rates, or not `expected`; the message gives the converting command."""
    def describe(rate):
        paths = by_rate[rate]
        return f"{rate} Hz in {len(paths)} file(s) (e.g. {paths[0]})"

    rates = sorted(by_rate, key=lambda rate: (-len(by_rate[rate]), rate))
    target = int(expected) if expected is not None else rates[0]
    convert = f"Convert them (frequencies would be mis-scaled otherwise) with: {resample_command(root, target)}"
    if len(rates) > 1:
        wanted = f"; expected {expected} Hz" if expected is not None else ""
        raise DatasetError(
            "sample rates differ within the dataset: "
            + "; ".join(describe(rate) for rate in rates)
            + f"{wanted}. {convert}"
        )
    if expected is not None and rates[0] != int(expected):
        raise DatasetError(
            f"sample rate {describe(rates[0])} but {int(expected)} Hz is configured. {convert}; "
            "or set features.sample_rate to the files' rate."
        )


def _summary_sort_key(key: Tuple[Optional[float], str, str, int]):
    """Sorts `(snr_db, machine, machine_id, label)` with `None` SNR first."""
    snr, machine, machine_id, label = key
    return (snr is not None, snr if snr is not None else 0.0, machine, machine_id, label)


__all__ = [
    "KNOWN_MACHINES",
    "LAYOUTS_TEXT",
    "LABEL_NAMES",
    "UNLABELLED",
    "DatasetError",
    "ClipRecord",
    "index_dataset",
    "parse_clip_path",
    "check_audio_headers",
    "machine_group",
    "summarize",
    "format_summary",
    "normalize_machine_id",
]
