"""Fixtures of the training tests."""

import shutil

import pytest

from tests.conftest import DCASE_DIR


@pytest.fixture
def real_dcase_dev_data(tmp_path):
    """The real DCASE 2020 clips of ids 04 and 06 as dev_data/pump/{train,test} (two normal training clips each)."""
    folder = tmp_path / "real"
    train_names = ["normal_id_04_00000000", "normal_id_04_00000007", "normal_id_06_00000000", "normal_id_06_00000008"]
    for path in DCASE_DIR.glob("*_id_0[46]_*.wav"):
        subset = "train" if path.stem in train_names else "test"
        (folder / "dev_data" / "pump" / subset).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / "dev_data" / "pump" / subset / path.name)
    return folder / "dev_data"
