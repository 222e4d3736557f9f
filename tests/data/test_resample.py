"""`python -m pump_keras.data.resample`: the command a rate refusal prints converts the data, frequencies kept."""

import os
import shlex
import subprocess
import sys

import numpy as np
import pytest

from pump_keras.audio.wavfile import read_wav_header, write_wav
from pump_keras.cli import resample as resample_cli
from pump_keras.data.index import DatasetError, check_audio_headers, index_dataset
from tests.conftest import REPO_ROOT, fails_instead_of_hanging

TONE_HZ = 1000.0


def tone(rate: int, seconds: float = 0.5, channels: int = 1) -> np.ndarray:
    """An int16 1 kHz sine `[frames, channels]`, each channel at another amplitude."""
    t = np.arange(int(rate * seconds)) / rate
    wave = np.sin(2 * np.pi * TONE_HZ * t)
    return np.stack([(0.5 / (c + 1)) * wave * 32767 for c in range(channels)], axis=1).astype(np.int16)


def peak_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples[:, 0].astype(np.float64)))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[np.argmax(spectrum)])


def recordings_at(root, rate):
    """A MIMII -6 dB folder with two 44.1 kHz 8-channel clips per class and a 16 kHz one."""
    for label in ("normal", "abnormal"):
        folder = root / "-6_dB_pump" / "pump" / "id_00" / label
        folder.mkdir(parents=True)
        for i in range(2):
            write_wav(str(folder / f"{i:08d}.wav"), tone(rate, channels=8), rate)
    write_wav(str(root / "-6_dB_pump" / "pump" / "id_00" / "normal" / "00000009.wav"), tone(16000), 16000,
              extensible=False)
    return root / "-6_dB_pump"


def test_a_rate_refusal_prints_the_command_that_converts_the_folder_keeping_frequencies(tmp_path, capsys):
    source = recordings_at(tmp_path / "data", 44100)
    records = index_dataset(source)
    with pytest.raises(DatasetError) as info:
        check_audio_headers(records, sample_rate=16000, root=str(source))
    message = str(info.value)
    out = tmp_path / "data" / "resampled_16000Hz"
    command = f"python -m pump_keras.data.resample {source} {out} --rate 16000"
    assert command in message and f"it writes {out / '-6_dB_pump'}" in message
    assert resample_cli.main(shlex.split(command)[3:]) == 0
    assert "4 resampled to 16000 Hz, 1 copied" in capsys.readouterr().out
    converted = index_dataset(out / "-6_dB_pump")
    assert [os.path.relpath(r.path, out) for r in converted] == [os.path.relpath(r.path, tmp_path / "data")
                                                                 for r in records]
    assert {r.snr_db for r in converted} == {-6.0}
    check_audio_headers(converted, sample_rate=16000)
    header = read_wav_header(converted[0].path)
    assert header.channels == 8 and header.bits_per_sample == 16
    assert header.frames == pytest.approx(8000, abs=2)
    from scipy.io import wavfile

    _, samples = wavfile.read(converted[0].path)
    assert peak_hz(samples, 16000) == pytest.approx(TONE_HZ, abs=4)
    assert np.abs(samples[:, 1]).max() == pytest.approx(np.abs(samples[:, 0]).max() / 2, rel=0.02)
    # A second run keeps what the first wrote.
    assert resample_cli.main([str(source), str(out), "--rate", "16000"]) == 0
    assert "5 kept" in capsys.readouterr().out


def test_resample_usage_errors_and_unreadable_files(tmp_path, capsys):
    source = recordings_at(tmp_path / "data", 22050)
    assert resample_cli.main([str(source), str(source / "out")]) == 2
    assert "must lie outside" in capsys.readouterr().err
    assert resample_cli.main([str(tmp_path / "nothing"), str(tmp_path / "out")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert resample_cli.main([str(source), str(tmp_path / "out"), "--rate", "0"]) == 2
    (source / "pump" / "id_00" / "normal" / "broken.wav").write_bytes(b"not a wav")
    os.mkfifo(source / "pump" / "id_00" / "normal" / "pipe.wav")
    with fails_instead_of_hanging(30):
        assert resample_cli.main([str(source), str(tmp_path / "out")]) == 1
    errors = capsys.readouterr().err
    assert "broken.wav: not a RIFF/WAVE file" in errors and "pipe.wav: a named pipe" in errors
    assert len(index_dataset(tmp_path / "out" / "-6_dB_pump")) == 5
    process = subprocess.run([sys.executable, "-m", "pump_keras.data.resample", "--help"], cwd=REPO_ROOT,
                             capture_output=True, text=True, timeout=120)
    assert process.returncode == 0 and "--rate" in process.stdout
