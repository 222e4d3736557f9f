"""Synthetic pump recordings in the MIMII layout (and the DCASE layouts, `pump_keras.data.synthetic_layouts`).

`generate_dataset` writes

    OUT/{snr}_dB_pump/pump/id_XX/{normal,abnormal}/NNNNNNNN.wav

as 8-channel 16 kHz int16 WAVE_FORMAT_EXTENSIBLE files, like the published
MIMII pump files. The CLI is

    python -m pump_keras.data.synthetic --out DIR [--clips-per-class N]
        [--seconds S] [--snr-db D [D ...]] [--seed K] [--machine-ids 00 02 ...]
        [--fault-boost-db B]

Sound model
-----------
Each machine id is a different centrifugal pump, described by one row of
`PUMPS`: its shaft speed (20-30 Hz), number of impeller vanes (the blade-pass
frequency is vanes x shaft speed), the amplitude profile of its shaft and
blade-pass harmonics, its structural resonances, the band of its flow noise
and its rolling-bearing geometry. A normal clip is the sum of

* tonal components: shaft harmonics (1x, 2x, ...) and blade-pass harmonics,
  following the instantaneous phase of a shaft whose speed is jittered per
  clip (`NORMAL_VARIATION.speed_jitter`) and wanders slowly within the clip;
* flow noise: band-limited turbulence whose level breathes slowly (flow
  unsteadiness) and pulses at the blade-pass frequency (vane passing);
* structural resonances: lightly damped modes of the casing excited by
  broadband forcing.

Harmonic amplitudes, component levels, resonance frequencies and modulation
depths are jittered per clip, so normal is a family of sounds, not a template.

What makes a clip abnormal: exactly one fault, drawn per clip from
`FAULT_TYPES` with a severity drawn uniformly from `FAULT_SEVERITY` (the
ranges reach down to subtle faults, often masked at low SNR):

* ``imbalance`` (rotor imbalance / misalignment): the 1x shaft harmonic is
  raised by the severity in dB (the 2x by half of it) and the blade-pass tones
  are amplitude-modulated at the shaft rate, which puts sidebands at
  blade-pass +- shaft speed;
* ``bearing`` (outer-race defect): impulses repeating at a non-integer
  multiple of the shaft speed (the pump's `bearing_ratio`), stronger in the
  load zone, each ringing a high-frequency resonance and decaying within a few
  milliseconds;
* ``cavitation``: bursts of broadband high-frequency crackle (collapsing
  vapour bubbles, denser at vane passing);
* ``clogging``: the shaft slows by the severity (a fraction), the flow-noise
  band narrows towards low frequencies and the blade-pass pulsation rises;
* ``leakage``: a steady, slowly fluctuating hiss in a band a few kHz wide
  (jet noise from a worn seal).

Faults never change the loudness: every pump recording is normalised to
`LEVELS.pump_rms_dbfs` plus a random per-clip offset, so RMS level alone does
not give the label away.

Microphone array and background
-------------------------------
The pump, a point source about half a metre away, reaches a circular array of
`config.channels` microphones (`ARRAY`) with far-field delays of a fraction of
a millisecond and small per-channel gain differences. The factory background
(`BACKGROUND`) is a brown-noise rumble arriving from another direction, more
rumble independent at each microphone (the diffuse field), a hum of other
machinery at an unrelated frequency with its harmonics, occasional metallic
clanks (in both classes) and independent sensor noise. Its colour, hum level,
diffuse share and clank rate change from recording to recording. It is scaled
so that ``10 * log10(P_pump / P_background) == snr_db + snr_offset_db``,
powers taken over all samples and channels, where the recording's
`snr_offset_db` (up to `BACKGROUND.snr_jitter_db` either way) makes the folder's
SNR a nominal one, as in MIMII. Pumps differ in loudness too
(`PumpSpec.level_offset_db`), and each clip's level is jittered, so level
tells neither the id nor the label.

Determinism
-----------
Every random stream of a clip comes from ``SeedSequence([seed, int(id),
label_code, index])``; none depends on the SNR. As in MIMII, the same pump
recording and the same background are mixed at each SNR folder, so a clip
with the same id, label and number in several folders is one recording at
several SNRs. The same config always gives byte-identical files.

Scaling and overwriting
-----------------------
Mixes are written as int16 with full scale 1.0 -> 32768. The pump sits at
about -36 dBFS RMS, which at 0 dB SNR puts 98 % of the STFT magnitudes
(n_fft=1024, referenced to 1.0) between about -55 and +6 dB, as in real MIMII
clips, and keeps peaks below -9 dBFS for SNRs down to -10 dB. If a mix would still peak above
`LEVELS.peak_ceiling_dbfs` (only at SNRs below about -15 dB), the whole mix,
pump and background alike, is scaled down to that ceiling. Existing files
at the target paths are overwritten atomically; since content is a
deterministic function of the config, rewriting a tree with the same config
leaves it byte-identical, and other files in the output folder are left alone.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
from scipy import fft as sp_fft, signal

from pump_keras.audio.wavfile import write_wav
from pump_keras.config import SyntheticConfig
from pump_keras.data.synthetic_layouts import dcase_jobs

LABELS = ("normal", "abnormal")
LABEL_CODES = {"normal": 0, "abnormal": 1}
FAULT_TYPES = ("imbalance", "bearing", "cavitation", "clogging", "leakage")
INT16_FULL_SCALE = 32768.0
MIN_SAMPLE_RATE = 16000
MIN_SECONDS = 0.05
MAX_BAND_EDGE = 0.95  # band-pass edges stay below this fraction of Nyquist


@dataclass(frozen=True)
class PumpSpec:
    """The fixed acoustic identity of one pump (one machine id).

    Attributes:
        shaft_hz: nominal shaft rotation frequency.
        vanes: impeller vanes; blade-pass frequency = vanes * shaft_hz.
        shaft_harmonics: relative amplitudes of 1x, 2x, ... shaft harmonics.
        blade_pass_harmonics: relative amplitudes of 1x, 2x, ... blade pass.
        resonances: structural modes as (frequency Hz, quality factor).
        flow_band_hz: (low, high) band of the flow noise.
        flow_db: flow-noise power relative to the tonal power.
        resonance_db: resonance power relative to the tonal power.
        bearing_ratio: outer-race defect frequency / shaft frequency.
        bearing_resonance_hz: the mode rung by bearing-defect impulses.
        azimuth_deg: direction of the pump seen from the microphone array.
        level_offset_db: this pump's loudness relative to `LEVELS.pump_rms_dbfs`
            (pumps differ in size and distance, so ids differ in level).
    """

    shaft_hz: float
    vanes: int
    shaft_harmonics: Tuple[float, ...]
    blade_pass_harmonics: Tuple[float, ...]
    resonances: Tuple[Tuple[float, float], ...]
    flow_band_hz: Tuple[float, float]
    flow_db: float
    resonance_db: float
    bearing_ratio: float
    bearing_resonance_hz: float
    azimuth_deg: float
    level_offset_db: float = 0.0

    @property
    def blade_pass_hz(self) -> float:
        """Nominal blade-pass frequency."""
        return self.vanes * self.shaft_hz


PUMPS: Dict[str, PumpSpec] = {
    "00": PumpSpec(
        shaft_hz=24.7, vanes=5,
        shaft_harmonics=(1.0, 0.55, 0.30, 0.22, 0.12, 0.08),
        blade_pass_harmonics=(1.4, 0.5, 0.2),
        resonances=((640.0, 12.0), (1850.0, 20.0)),
        flow_band_hz=(150.0, 2600.0), flow_db=0.0, resonance_db=-8.0,
        bearing_ratio=3.57, bearing_resonance_hz=3300.0, azimuth_deg=0.0, level_offset_db=0.0,
    ),
    "02": PumpSpec(
        shaft_hz=29.3, vanes=6,
        shaft_harmonics=(1.0, 0.35, 0.40, 0.15, 0.10),
        blade_pass_harmonics=(1.2, 0.7, 0.3),
        resonances=((820.0, 10.0), (2400.0, 18.0)),
        flow_band_hz=(200.0, 3400.0), flow_db=2.0, resonance_db=-10.0,
        bearing_ratio=4.13, bearing_resonance_hz=3900.0, azimuth_deg=45.0, level_offset_db=5.0,
    ),
    "04": PumpSpec(
        shaft_hz=20.9, vanes=7,
        shaft_harmonics=(1.0, 0.70, 0.25, 0.30, 0.10, 0.10, 0.05),
        blade_pass_harmonics=(1.6, 0.4, 0.25),
        resonances=((510.0, 9.0), (1420.0, 15.0)),
        flow_band_hz=(120.0, 2100.0), flow_db=-2.0, resonance_db=-6.0,
        bearing_ratio=3.08, bearing_resonance_hz=2700.0, azimuth_deg=90.0, level_offset_db=-4.0,
    ),
    "06": PumpSpec(
        shaft_hz=26.8, vanes=4,
        shaft_harmonics=(1.0, 0.45, 0.35, 0.20),
        blade_pass_harmonics=(1.3, 0.6, 0.35),
        resonances=((730.0, 14.0), (2050.0, 22.0)),
        flow_band_hz=(180.0, 3000.0), flow_db=1.0, resonance_db=-9.0,
        bearing_ratio=4.61, bearing_resonance_hz=4300.0, azimuth_deg=135.0, level_offset_db=2.0,
    ),
}


@dataclass(frozen=True)
class NormalVariation:
    """How much normal clips of one pump differ from each other.

    Attributes:
        speed_jitter: max fractional deviation of the clip's shaft speed.
        speed_wander: depth of the slow speed wander within a clip.
        wander_hz: (low, high) rate of that wander.
        harmonic_jitter_db: std of each harmonic amplitude, dB.
        level_jitter_db: std of each component level, dB.
        resonance_jitter: max fractional shift of each resonance.
        flow_mod_depth: (low, high) depth of the slow flow-level modulation.
        flow_mod_hz: (low, high) rate of the slow flow-level modulation.
        blade_pass_mod_depth: (low, high) flow-noise pulsation at blade pass.
    """

    speed_jitter: float = 0.015
    speed_wander: float = 0.003
    wander_hz: Tuple[float, float] = (0.1, 0.8)
    harmonic_jitter_db: float = 1.5
    level_jitter_db: float = 1.5
    resonance_jitter: float = 0.02
    flow_mod_depth: Tuple[float, float] = (0.05, 0.25)
    flow_mod_hz: Tuple[float, float] = (0.2, 1.5)
    blade_pass_mod_depth: Tuple[float, float] = (0.05, 0.25)


NORMAL_VARIATION = NormalVariation()

# Severity range of each fault; units differ per fault:
#   imbalance   dB added to the 1x shaft harmonic (half of it to 2x)
#   bearing     impulse-train power relative to the normal pump, dB
#   cavitation  crackle power relative to the normal pump, dB
#   clogging    fractional drop of the shaft speed
#   leakage     hiss power relative to the normal pump, dB
FAULT_SEVERITY: Dict[str, Tuple[float, float]] = {
    "imbalance": (4.0, 14.0),
    "bearing": (-20.0, -6.0),
    "cavitation": (-28.0, -12.0),
    "clogging": (0.04, 0.12),
    "leakage": (-18.0, -6.0),
}

# The largest shaft-speed drop a boosted clogging fault may reach.
MAX_CLOGGING_DROP = 0.5


@dataclass(frozen=True)
class FaultShape:
    """Fixed shape constants of the faults (their size is `FAULT_SEVERITY`).

    Attributes:
        sideband_depth_per_db: blade-pass AM depth per dB of imbalance.
        bearing_decay_ms: (low, high) ring-down time of a defect impulse.
        bearing_slip: std of the random spacing jitter of defect impulses.
        bearing_impulse_spread: impulse strengths vary by +- this fraction.
        bearing_load_zone_depth: impulse strength modulation at shaft rate.
        cavitation_bursts_per_s: (low, high) rate of crackle bursts.
        cavitation_burst_ms: (low, high) length of one crackle burst.
        cavitation_density: probability of a bubble collapse per sample in a burst.
        cavitation_highpass_hz: crackle is high-passed above this frequency.
        clogging_band_per_drop: flow band's upper edge shrinks by this x drop.
        clogging_blade_pass_db_per_drop: blade-pass tone rise, dB per unit drop.
        leakage_centre_hz: (low, high) centre frequency of the hiss band.
        leakage_octaves: width of the hiss band in octaves.
        leakage_flutter_depth: depth of the hiss's slow level fluctuation.
    """

    sideband_depth_per_db: float = 0.03
    bearing_decay_ms: Tuple[float, float] = (1.5, 4.0)
    bearing_slip: float = 0.01
    bearing_impulse_spread: float = 0.3
    bearing_load_zone_depth: float = 0.6
    cavitation_bursts_per_s: Tuple[float, float] = (3.0, 12.0)
    cavitation_burst_ms: Tuple[float, float] = (15.0, 120.0)
    cavitation_density: float = 0.02
    cavitation_highpass_hz: float = 2000.0
    clogging_band_per_drop: float = 4.0
    clogging_blade_pass_db_per_drop: float = 60.0
    leakage_centre_hz: Tuple[float, float] = (3500.0, 6000.0)
    leakage_octaves: float = 0.6
    leakage_flutter_depth: float = 0.2


FAULT_SHAPE = FaultShape()


@dataclass(frozen=True)
class ArrayGeometry:
    """The circular microphone array.

    Attributes:
        radius_m: radius of the circle the microphones sit on.
        speed_of_sound: in m/s.
        gain_spread_db: std of the per-channel gain.
        azimuth_jitter_deg: std of the source direction around the pump's.
    """

    radius_m: float = 0.05
    speed_of_sound: float = 343.0
    gain_spread_db: float = 0.5
    azimuth_jitter_deg: float = 5.0


ARRAY = ArrayGeometry()


@dataclass(frozen=True)
class Background:
    """The factory background, levels relative to its directional rumble.

    Attributes:
        rumble_corner_hz: the rumbles are brown noise (power ~ 1/f**2),
            flat below this corner frequency.
        diffuse_db: rumble independent at each microphone (diffuse field).
        hum_db: hum of other machinery.
        hum_hz: (low, high) range of its fundamental.
        hum_harmonics: relative amplitudes of its harmonics.
        clanks_per_s: mean rate of metallic clanks.
        clank_peak_db: loudest clank peak relative to the rumble RMS.
        clank_spread_db: clanks are up to this much quieter than the loudest.
        clank_modes_hz: (low, high) range of a clank's ringing modes.
        clank_decay_ms: (low, high) ring-down time of a clank.
        clank_modes: ringing modes per clank.
        sensor_db: independent sensor noise.
        corner_jitter: the rumble corner is scaled by a factor drawn per
            clip from `(1 / corner_jitter, corner_jitter)` (log-uniform).
        hum_jitter_db: the hum level varies per clip by up to this much.
        diffuse_jitter_db: the diffuse rumble varies per clip by up to this much.
        clank_rate_jitter: the clank rate is `clanks_per_s` times a factor
            drawn per clip from `[1 - clank_rate_jitter, 1 + clank_rate_jitter]`.
        snr_jitter_db: the background of each recording sits up to this much
            above or below the nominal SNR of its folder (the same offset in
            every SNR folder), as real recordings' SNRs are nominal.
    """

    rumble_corner_hz: float = 20.0
    diffuse_db: float = -3.0
    hum_db: float = -6.0
    hum_hz: Tuple[float, float] = (36.0, 64.0)
    hum_harmonics: Tuple[float, ...] = (1.0, 0.6, 0.35, 0.2)
    clanks_per_s: float = 0.5
    clank_peak_db: float = 12.0
    clank_spread_db: float = 6.0
    clank_modes_hz: Tuple[float, float] = (300.0, 3000.0)
    clank_decay_ms: Tuple[float, float] = (20.0, 80.0)
    clank_modes: int = 3
    sensor_db: float = -45.0
    corner_jitter: float = 2.0
    hum_jitter_db: float = 6.0
    diffuse_jitter_db: float = 3.0
    clank_rate_jitter: float = 1.0
    snr_jitter_db: float = 2.0


BACKGROUND = Background()


@dataclass(frozen=True)
class Levels:
    """Absolute levels of the written mixes.

    Attributes:
        pump_rms_dbfs: RMS of the pump recording, dB re full scale.
        pump_level_jitter_db: max random offset of that level per clip.
        peak_ceiling_dbfs: mixes peaking above this are scaled down to it.
    """

    pump_rms_dbfs: float = -36.0
    pump_level_jitter_db: float = 3.0
    peak_ceiling_dbfs: float = -1.0


LEVELS = Levels()


@dataclass(frozen=True)
class ClipParams:
    """The random choices of one pump recording (all but noise waveforms)."""

    machine_id: str
    label: str
    index: int
    fault_type: Optional[str]
    severity: Optional[float]
    shaft_hz: float
    level_dbfs: float
    azimuth_deg: float
    channel_gains_db: Tuple[float, ...]
    wander: Tuple[Tuple[float, float], ...]
    shaft_amps: Tuple[float, ...]
    shaft_phases: Tuple[float, ...]
    blade_pass_amps: Tuple[float, ...]
    blade_pass_phases: Tuple[float, ...]
    flow_band_hz: Tuple[float, float]
    flow_db: float
    flow_mod: Tuple[float, float, float]
    blade_pass_mod_depth: float
    resonances: Tuple[Tuple[float, float], ...]
    resonance_db: float
    snr_offset_db: float = 0.0

    @property
    def blade_pass_hz(self) -> float:
        """Blade-pass frequency of this clip."""
        return PUMPS[self.machine_id].vanes * self.shaft_hz


# ---------------------------------------------------------------- validation

def validate_config(config: SyntheticConfig) -> None:
    """Raises ValueError for settings the generator cannot honour."""
    unknown = [m for m in config.machine_ids if m not in PUMPS]
    if unknown:
        raise ValueError(
            f"Unknown machine ids {unknown}; the synthetic pumps are {sorted(PUMPS)}."
        )
    if not config.machine_ids:
        raise ValueError("machine_ids must name at least one machine id.")
    if len(set(config.machine_ids)) != len(config.machine_ids):
        raise ValueError(f"machine_ids has duplicates: {config.machine_ids}.")
    if not config.snr_db:
        raise ValueError("snr_db must name at least one SNR.")
    if not all(np.isfinite(config.snr_db)):
        raise ValueError(f"snr_db must be finite, got {config.snr_db}.")
    names = [snr_folder_name(s) for s in config.snr_db]
    if len(set(names)) != len(names):
        raise ValueError(f"snr_db has duplicates: {config.snr_db}.")
    if config.sample_rate < MIN_SAMPLE_RATE:
        raise ValueError(
            f"sample_rate must be at least {MIN_SAMPLE_RATE} Hz, got {config.sample_rate}."
        )
    if config.seconds < MIN_SECONDS:
        raise ValueError(f"seconds must be at least {MIN_SECONDS}, got {config.seconds}.")
    if int(config.seed) != config.seed or config.seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {config.seed!r}.")


def _check_clip_args(machine_id: str, label: str, index: int) -> str:
    """Validates one clip's key; returns the machine id as two digits."""
    machine_id = f"{int(machine_id):02d}"
    if machine_id not in PUMPS:
        raise ValueError(f"Unknown machine id {machine_id!r}; the synthetic pumps are {sorted(PUMPS)}.")
    if label not in LABEL_CODES:
        raise ValueError(f"label must be one of {LABELS}, got {label!r}.")
    if int(index) != index or index < 0:
        raise ValueError(f"index must be a non-negative integer, got {index!r}.")
    return machine_id


# ---------------------------------------------------------------- random streams

def clip_streams(machine_id: str, label: str, index: int, seed: int) -> Dict[str, np.random.Generator]:
    """Independent generators of one clip, keyed by (seed, id, label, index).

    Streams: `params` (pump variation), `fault` (fault type and severity),
    `pump_noise` (pump waveforms), `background`. None depends on the SNR.
    """
    root = np.random.SeedSequence([int(seed), int(machine_id), LABEL_CODES[label], int(index)])
    names = ("params", "fault", "pump_noise", "background")
    return {name: np.random.default_rng(child) for name, child in zip(names, root.spawn(len(names)))}


def _jitter_db(rng: np.random.Generator, std_db: float, size=None) -> np.ndarray:
    """Log-normal gain factors with `std_db` spread."""
    return 10.0 ** (rng.normal(0.0, std_db, size) / 20.0)


def draw_clip_params(machine_id: str, label: str, index: int, config: SyntheticConfig) -> ClipParams:
    """Draws the pump variation and, for abnormal clips, the fault."""
    machine_id = _check_clip_args(machine_id, label, index)
    streams = clip_streams(machine_id, label, index, config.seed)
    rng, fault_rng = streams["params"], streams["fault"]
    spec, var = PUMPS[machine_id], NORMAL_VARIATION

    shaft_hz = spec.shaft_hz * (1.0 + rng.uniform(-var.speed_jitter, var.speed_jitter))
    wander = tuple(
        (float(rng.uniform(*var.wander_hz)), float(rng.uniform(0, 2 * np.pi))) for _ in range(2)
    )
    shaft_amps = np.asarray(spec.shaft_harmonics) * _jitter_db(
        rng, var.harmonic_jitter_db, len(spec.shaft_harmonics))
    blade_amps = np.asarray(spec.blade_pass_harmonics) * _jitter_db(
        rng, var.harmonic_jitter_db, len(spec.blade_pass_harmonics))
    shaft_phases = rng.uniform(0, 2 * np.pi, len(shaft_amps))
    blade_phases = rng.uniform(0, 2 * np.pi, len(blade_amps))
    resonances = tuple(
        (float(f * (1.0 + rng.uniform(-var.resonance_jitter, var.resonance_jitter))), float(q))
        for f, q in spec.resonances
    )
    flow_mod = (float(rng.uniform(*var.flow_mod_depth)), float(rng.uniform(*var.flow_mod_hz)),
                float(rng.uniform(0, 2 * np.pi)))
    params = dict(
        machine_id=machine_id, label=label, index=int(index), fault_type=None, severity=None,
        shaft_hz=float(shaft_hz),
        level_dbfs=float(LEVELS.pump_rms_dbfs + spec.level_offset_db
                         + rng.uniform(-LEVELS.pump_level_jitter_db, LEVELS.pump_level_jitter_db)),
        azimuth_deg=float(spec.azimuth_deg + rng.normal(0.0, ARRAY.azimuth_jitter_deg)),
        channel_gains_db=tuple(float(g) for g in rng.normal(0.0, ARRAY.gain_spread_db, config.channels)),
        wander=wander,
        shaft_amps=tuple(float(a) for a in shaft_amps),
        shaft_phases=tuple(float(p) for p in shaft_phases),
        blade_pass_amps=tuple(float(a) for a in blade_amps),
        blade_pass_phases=tuple(float(p) for p in blade_phases),
        flow_band_hz=tuple(float(f) for f in spec.flow_band_hz),
        flow_db=float(spec.flow_db + rng.normal(0.0, var.level_jitter_db)),
        flow_mod=flow_mod,
        blade_pass_mod_depth=float(rng.uniform(*var.blade_pass_mod_depth)),
        resonances=resonances,
        resonance_db=float(spec.resonance_db + rng.normal(0.0, var.level_jitter_db)),
        snr_offset_db=float(rng.uniform(-BACKGROUND.snr_jitter_db, BACKGROUND.snr_jitter_db)),
    )
    if label == "abnormal":
        fault_type = FAULT_TYPES[int(fault_rng.integers(len(FAULT_TYPES)))]
        severity = boosted_severity(fault_type, float(fault_rng.uniform(*FAULT_SEVERITY[fault_type])),
                                    config.fault_boost_db)
        params.update(fault_type=fault_type, severity=severity)
        if fault_type == "clogging":
            params = _apply_clogging(params, severity)
    return ClipParams(**params)


def boosted_severity(fault_type: str, severity: float, boost_db: float) -> float:
    """A fault severity made `boost_db` stronger: added to the dB kinds, a scaled speed drop for clogging."""
    if fault_type == "clogging":
        return min(MAX_CLOGGING_DROP, severity * 10.0 ** (boost_db / 20.0))
    return severity + boost_db


def _apply_clogging(params: dict, drop: float) -> dict:
    """Slower shaft and a flow band shrunk towards low frequencies.

    The band keeps at least an octave; the stronger blade-pass pulsation of
    a clogged pump is added in `_tonal`.
    """
    low, high = params["flow_band_hz"]
    high = max(2.0 * low, high * (1.0 - FAULT_SHAPE.clogging_band_per_drop * drop))
    return dict(params, shaft_hz=params["shaft_hz"] * (1.0 - drop), flow_band_hz=(low, high))


# ---------------------------------------------------------------- building blocks

def _unit_power(x: np.ndarray) -> np.ndarray:
    """`x` scaled to mean power 1 (unchanged if silent)."""
    power = float(np.mean(np.square(x, dtype=np.float64)))
    return x / np.sqrt(power) if power > 0 else x


def _resonator(x: np.ndarray, freq_hz: float, decay_s: float, sample_rate: int) -> np.ndarray:
    """Two-pole resonance ringing at `freq_hz`, impulse-response peak ~1."""
    w = 2 * np.pi * freq_hz / sample_rate
    r = np.exp(-1.0 / (decay_s * sample_rate))
    return signal.lfilter([np.sin(w)], [1.0, -2.0 * r * np.cos(w), r * r], x, axis=-1)


def _decay_from_q(freq_hz: float, q: float) -> float:
    """Amplitude decay time of a mode of quality factor `q`."""
    return q / (np.pi * freq_hz)


def _bandpass(x: np.ndarray, low_hz: float, high_hz: float, sample_rate: int, order: int = 2) -> np.ndarray:
    """Butterworth band-pass along the last axis."""
    nyquist = sample_rate / 2.0
    high_hz = min(high_hz, MAX_BAND_EDGE * nyquist)
    sos = signal.butter(order, [low_hz, high_hz], btype="bandpass", fs=sample_rate, output="sos")
    return signal.sosfilt(sos, x, axis=-1)


def _brown_noise(rng: np.random.Generator, shape: Tuple[int, ...], corner_hz: float,
                 sample_rate: int) -> np.ndarray:
    """Leaky-integrated white noise (power ~ 1/f**2 above `corner_hz`), unit power.

    The integrator starts in its stationary state, so there is no fade-in.
    """
    rho = np.exp(-2 * np.pi * corner_hz / sample_rate)
    gain = np.sqrt(1.0 - rho * rho)
    white = rng.standard_normal(shape, dtype=np.float32)
    start = rng.standard_normal(shape[:-1] + (1,)) * rho
    out, _ = signal.lfilter([gain], [1.0, -rho], white, axis=-1, zi=start.astype(np.float32))
    return out


def _poisson_impulses(rng: np.random.Generator, rate_hz: float, n: int, sample_rate: int) -> np.ndarray:
    """Sample indices of a Poisson process of rate `rate_hz` over n samples."""
    count = rng.poisson(rate_hz * n / sample_rate)
    return np.sort(rng.integers(0, n, count))


def _gate(starts: np.ndarray, lengths: np.ndarray, n: int) -> np.ndarray:
    """1 inside the windows [start, start + length), 0 elsewhere."""
    edges = np.zeros(n + 1)
    np.add.at(edges, np.minimum(starts, n), 1.0)
    np.add.at(edges, np.minimum(starts + lengths, n), -1.0)
    return (np.cumsum(edges[:n]) > 0).astype(float)


def _array_delays(azimuth_deg: float, channels: int) -> np.ndarray:
    """Far-field arrival delays (s) at the microphones of the circular array."""
    mic_angles = 2 * np.pi * np.arange(channels) / channels
    return -ARRAY.radius_m / ARRAY.speed_of_sound * np.cos(np.deg2rad(azimuth_deg) - mic_angles)


def _render_array(source: np.ndarray, delays_s: np.ndarray, gains: np.ndarray,
                  sample_rate: int) -> np.ndarray:
    """A mono source at each microphone: fractional delay and gain -> [channels, n].

    Delays are applied as linear phase on a zero-padded spectrum (float32).
    """
    n = source.shape[-1]
    pad = int(np.ceil(np.max(np.abs(delays_s)) * sample_rate)) + 8
    size = sp_fft.next_fast_len(n + 2 * pad, real=True)
    spectrum = sp_fft.rfft(source.astype(np.float32), size)
    freqs = sp_fft.rfftfreq(size, 1.0 / sample_rate)
    angle = np.outer(-2 * np.pi * delays_s, freqs).astype(np.float32)
    shifts = np.empty(angle.shape, np.complex64)
    shifts.real = np.cos(angle)
    shifts.imag = np.sin(angle)
    shifts *= gains.astype(np.float32)[:, None]
    shifts *= spectrum[None, :]
    return sp_fft.irfft(shifts, size, axis=-1)[:, :n]


# ---------------------------------------------------------------- the pump

def shaft_phase(params: ClipParams, n: int, sample_rate: int) -> np.ndarray:
    """Instantaneous shaft phase (rad) with the slow speed wander."""
    t = np.arange(n) / sample_rate
    wander = sum(np.sin(2 * np.pi * f * t + p) for f, p in params.wander) / len(params.wander)
    inst_hz = params.shaft_hz * (1.0 + NORMAL_VARIATION.speed_wander * wander)
    return 2 * np.pi * np.cumsum(inst_hz) / sample_rate


def _tonal(params: ClipParams, phase: np.ndarray) -> np.ndarray:
    """Shaft and blade-pass harmonics; the normal set has unit power.

    `imbalance` and `clogging` raise harmonics above that normal set.
    """
    vanes = PUMPS[params.machine_id].vanes
    shaft_amps = np.asarray(params.shaft_amps)
    blade_amps = np.asarray(params.blade_pass_amps)
    scale = 1.0 / np.sqrt(0.5 * (np.sum(shaft_amps ** 2) + np.sum(blade_amps ** 2)))
    sideband = 0.0
    if params.fault_type == "imbalance":
        boost = params.severity
        shaft_amps = shaft_amps.copy()
        shaft_amps[0] *= 10.0 ** (boost / 20.0)
        if len(shaft_amps) > 1:
            shaft_amps[1] *= 10.0 ** (boost / 40.0)
        sideband = FAULT_SHAPE.sideband_depth_per_db * boost
    elif params.fault_type == "clogging":
        blade_amps = blade_amps.copy()
        blade_amps[0] *= 10.0 ** (FAULT_SHAPE.clogging_blade_pass_db_per_drop * params.severity / 20.0)
    shaft = sum(a * np.sin((k + 1) * phase + p)
                for k, (a, p) in enumerate(zip(shaft_amps, params.shaft_phases)))
    blade = sum(a * np.sin((m + 1) * vanes * phase + p)
                for m, (a, p) in enumerate(zip(blade_amps, params.blade_pass_phases)))
    blade = blade * (1.0 + sideband * np.cos(phase))
    return scale * (shaft + blade)


def _flow_noise(params: ClipParams, phase: np.ndarray, rng: np.random.Generator,
                sample_rate: int) -> np.ndarray:
    """Band-limited turbulence, slowly modulated and pulsing at blade pass."""
    n = phase.shape[0]
    t = np.arange(n) / sample_rate
    noise = _unit_power(_bandpass(rng.standard_normal(n), *params.flow_band_hz, sample_rate))
    depth, rate, offset = params.flow_mod
    vanes = PUMPS[params.machine_id].vanes
    envelope = (1.0 + depth * np.sin(2 * np.pi * rate * t + offset)) * (
        1.0 + params.blade_pass_mod_depth * np.sin(vanes * phase))
    return _unit_power(noise * envelope)


def _structural(params: ClipParams, rng: np.random.Generator, n: int, sample_rate: int) -> np.ndarray:
    """Casing modes excited by broadband forcing."""
    forcing = rng.standard_normal(n)
    modes = sum(_resonator(forcing, f, _decay_from_q(f, q), sample_rate) for f, q in params.resonances)
    return _unit_power(modes)


def _bearing(params: ClipParams, phase: np.ndarray, rng: np.random.Generator,
             sample_rate: int) -> np.ndarray:
    """Outer-race defect: load-zone-modulated impulses ringing a high mode."""
    spec, shape = PUMPS[params.machine_id], FAULT_SHAPE
    n = phase.shape[0]
    defect_hz = spec.bearing_ratio * params.shaft_hz
    count = int(np.ceil(n / sample_rate * defect_hz)) + 1
    spacing = (1.0 + rng.normal(0.0, shape.bearing_slip, count)) / defect_hz
    times = rng.uniform(0, 1.0 / defect_hz) + np.cumsum(spacing)
    idx = (times * sample_rate).astype(int)
    idx = idx[idx < n]
    impulses = np.zeros(n)
    load_zone = 1.0 + shape.bearing_load_zone_depth * np.cos(phase[idx])
    spread = shape.bearing_impulse_spread
    impulses[idx] = load_zone * rng.uniform(1.0 - spread, 1.0 + spread, idx.size)
    decay_s = rng.uniform(*shape.bearing_decay_ms) / 1000.0
    return _unit_power(_resonator(impulses, spec.bearing_resonance_hz, decay_s, sample_rate))


def _cavitation(params: ClipParams, phase: np.ndarray, rng: np.random.Generator,
                sample_rate: int) -> np.ndarray:
    """Bursts of high-passed crackle, denser at vane passing."""
    shape, n = FAULT_SHAPE, phase.shape[0]
    starts = _poisson_impulses(rng, rng.uniform(*shape.cavitation_bursts_per_s), n, sample_rate)
    if starts.size == 0:
        starts = rng.integers(0, n, 1)
    lengths = (rng.uniform(*shape.cavitation_burst_ms, starts.size) * sample_rate / 1000.0).astype(int)
    vanes = PUMPS[params.machine_id].vanes
    density = shape.cavitation_density * _gate(starts, lengths, n) * (1.0 + np.cos(vanes * phase))
    collapses = (rng.random(n) < density) * rng.exponential(1.0, n) * rng.choice([-1.0, 1.0], n)
    sos = signal.butter(4, shape.cavitation_highpass_hz, btype="highpass", fs=sample_rate, output="sos")
    return _unit_power(signal.sosfilt(sos, collapses))


def _leakage(params: ClipParams, phase: np.ndarray, rng: np.random.Generator,
             sample_rate: int) -> np.ndarray:
    """A hiss band a few kHz up, slowly fluctuating."""
    shape, n = FAULT_SHAPE, phase.shape[0]
    half = 2.0 ** (shape.leakage_octaves / 2.0)
    centre = min(rng.uniform(*shape.leakage_centre_hz), MAX_BAND_EDGE * sample_rate / 2.0 / half)
    hiss = _bandpass(rng.standard_normal(n), centre / half, centre * half, sample_rate)
    t = np.arange(n) / sample_rate
    flutter_hz = rng.uniform(*NORMAL_VARIATION.flow_mod_hz)
    flutter = 1.0 + shape.leakage_flutter_depth * np.sin(2 * np.pi * flutter_hz * t
                                                         + rng.uniform(0, 2 * np.pi))
    return _unit_power(hiss * flutter)


# Faults that add a sound of their own; `imbalance` and `clogging` instead
# change the normal components (`_tonal`, `_apply_clogging`).
ADDITIVE_FAULTS = {"bearing": _bearing, "cavitation": _cavitation, "leakage": _leakage}


def pump_source(params: ClipParams, n: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """The pump's mono sound (arbitrary scale), fault included."""
    phase = shaft_phase(params, n, sample_rate)
    tonal = _tonal(params, phase)
    flow = _flow_noise(params, phase, rng, sample_rate)
    modes = _structural(params, rng, n, sample_rate)
    source = tonal + 10.0 ** (params.flow_db / 20.0) * flow + 10.0 ** (params.resonance_db / 20.0) * modes
    if params.fault_type in ADDITIVE_FAULTS:
        fault = ADDITIVE_FAULTS[params.fault_type](params, phase, rng, sample_rate)
        normal_power = float(np.mean(source ** 2))
        source = source + np.sqrt(normal_power * 10.0 ** (params.severity / 10.0)) * fault
    return source


def render_pump(params: ClipParams, config: SyntheticConfig, rng: np.random.Generator) -> np.ndarray:
    """The pump at the array, [frames, channels], RMS at `params.level_dbfs`."""
    n = clip_frames(config)
    source = pump_source(params, n, config.sample_rate, rng)
    delays = _array_delays(params.azimuth_deg, config.channels)
    gains = 10.0 ** (np.asarray(params.channel_gains_db) / 20.0)
    image = _render_array(source, delays, gains, config.sample_rate)
    return (_unit_power(image) * 10.0 ** (params.level_dbfs / 20.0)).T


# ---------------------------------------------------------------- the background

def render_background(config: SyntheticConfig, rng: np.random.Generator) -> np.ndarray:
    """Factory background at the array, [frames, channels], unit mean power."""
    bg, sr, n, c = BACKGROUND, config.sample_rate, clip_frames(config), config.channels
    t = np.arange(n) / sr
    # Per-recording character of the factory: colour, hum, diffuse share, clanks.
    corner_hz = bg.rumble_corner_hz * bg.corner_jitter ** rng.uniform(-1.0, 1.0)
    hum_db = bg.hum_db + rng.uniform(-bg.hum_jitter_db, bg.hum_jitter_db)
    diffuse_db = bg.diffuse_db + rng.uniform(-bg.diffuse_jitter_db, bg.diffuse_jitter_db)
    clank_rate = bg.clanks_per_s * rng.uniform(1.0 - bg.clank_rate_jitter, 1.0 + bg.clank_rate_jitter)
    rumble = _brown_noise(rng, (n,), corner_hz, sr)
    hum_hz = rng.uniform(*bg.hum_hz)
    hum = _unit_power(sum(a * np.sin(2 * np.pi * (k + 1) * hum_hz * t + rng.uniform(0, 2 * np.pi))
                          for k, a in enumerate(bg.hum_harmonics)))
    clanks = _clanks(rng, n, sr, clank_rate)
    source = rumble + 10.0 ** (hum_db / 20.0) * hum + clanks
    azimuth = rng.uniform(0.0, 360.0)
    gains = 10.0 ** (rng.normal(0.0, ARRAY.gain_spread_db, c) / 20.0)
    image = _render_array(source, _array_delays(azimuth, c), gains, sr)
    image += np.float32(10.0 ** (diffuse_db / 20.0)) * _brown_noise(rng, (c, n), corner_hz, sr)
    image += np.float32(10.0 ** (bg.sensor_db / 20.0)) * rng.standard_normal((c, n), dtype=np.float32)
    return _unit_power(image).T


def _clanks(rng: np.random.Generator, n: int, sample_rate: int, rate_hz: float) -> np.ndarray:
    """Occasional metallic clanks: Poisson impulses at `rate_hz` ringing a few modes."""
    bg = BACKGROUND
    impulses = np.zeros(n)
    idx = _poisson_impulses(rng, rate_hz, n, sample_rate)
    peaks_db = bg.clank_peak_db - rng.uniform(0.0, bg.clank_spread_db, idx.size)
    impulses[idx] = 10.0 ** (peaks_db / 20.0)
    if idx.size == 0:
        return impulses
    freqs = rng.uniform(*bg.clank_modes_hz, bg.clank_modes)
    decays = rng.uniform(*bg.clank_decay_ms, bg.clank_modes) / 1000.0
    return sum(_resonator(impulses, f, d, sample_rate) for f, d in zip(freqs, decays)) / bg.clank_modes


# ---------------------------------------------------------------- clips

def clip_frames(config: SyntheticConfig) -> int:
    """Frames of one clip."""
    return int(round(config.seconds * config.sample_rate))


def synthesize_parts(machine_id: str, label: str, index: int, config: SyntheticConfig,
                     snr_db: float) -> Tuple[np.ndarray, np.ndarray]:
    """(pump, background) as mixed in the `snr_db` folder, each [frames, channels] float32.

    Their sum is `synthesize_clip`. Their power ratio is `snr_db` plus the
    recording's `ClipParams.snr_offset_db`; the peak ceiling, if it bites,
    scales both alike.
    """
    pump, background, offset_db = _parts_unscaled(machine_id, label, index, config)
    return _mix_parts(pump, background, snr_db + offset_db)


def synthesize_clip(machine_id: str, label: str, index: int, config: SyntheticConfig,
                    snr_db: float) -> np.ndarray:
    """One mixed clip, [frames, channels] float32, full scale 1.0."""
    pump, background = synthesize_parts(machine_id, label, index, config, snr_db)
    return pump + background


def _parts_unscaled(machine_id: str, label: str, index: int, config: SyntheticConfig,
                    speed_factor: float = 1.0) -> Tuple[np.ndarray, np.ndarray, float]:
    """The pump at its level, the unit-power background (each [frames, channels]
    float32), and the recording's SNR offset from its folder's nominal SNR.
    `speed_factor` scales the shaft speed (a shifted operating condition)."""
    validate_config(config)
    params = draw_clip_params(machine_id, label, index, config)
    if speed_factor != 1.0:
        params = dataclasses.replace(params, shaft_hz=params.shaft_hz * speed_factor)
    streams = clip_streams(params.machine_id, label, index, config.seed)
    pump = render_pump(params, config, streams["pump_noise"])
    background = render_background(config, streams["background"])
    return pump, background, params.snr_offset_db


def _mix_parts(pump: np.ndarray, background: np.ndarray, snr_db: float) -> Tuple[np.ndarray, np.ndarray]:
    """Scales the background to `snr_db` and both under the peak ceiling."""
    pump_power = float(np.mean(np.square(pump, dtype=np.float64)))
    background = background * np.sqrt(pump_power / 10.0 ** (float(snr_db) / 10.0))
    pump = np.ascontiguousarray(pump, dtype=np.float32)
    background = np.ascontiguousarray(background, dtype=np.float32)
    peak = float(np.max(np.abs(pump + background)))
    ceiling = 10.0 ** (LEVELS.peak_ceiling_dbfs / 20.0)
    if peak <= ceiling:
        return pump, background
    gain = np.float32(ceiling / peak)
    return pump * gain, background * gain


def to_int16(clip: np.ndarray) -> np.ndarray:
    """Float samples (full scale 1.0) to int16, rounded and saturated.

    Scaling by a power of two is exact, so float32 input loses nothing.
    """
    clip = np.asarray(clip)
    if clip.dtype != np.float32:
        clip = clip.astype(np.float64)
    scaled = np.round(clip * clip.dtype.type(INT16_FULL_SCALE))
    return np.clip(scaled, -INT16_FULL_SCALE, INT16_FULL_SCALE - 1).astype(np.int16)


# ---------------------------------------------------------------- the dataset

def snr_folder_name(snr_db: float) -> str:
    """MIMII's SNR folder: 0 -> '0_dB_pump', -6 -> '-6_dB_pump', 2.5 -> '2.5_dB_pump'."""
    snr = float(snr_db)
    text = str(int(snr)) if snr.is_integer() else f"{snr:g}"
    return f"{text}_dB_pump"


def clip_path(out_dir: str, snr_db: float, machine_id: str, label: str, index: int) -> str:
    """Where one clip lives in the MIMII layout."""
    return os.path.join(os.fspath(out_dir), snr_folder_name(snr_db), "pump",
                        f"id_{int(machine_id):02d}", label, f"{int(index):08d}.wav")


def clips_of_class(config: SyntheticConfig, label: str) -> int:
    """Clips per machine id of `label` ("normal" or "abnormal")."""
    if label == "abnormal" and config.abnormal_clips_per_id is not None:
        return config.abnormal_clips_per_id
    return config.clips_per_class


def generate_dataset(out_dir: str, config: SyntheticConfig,
                     log: Optional[Callable[[str], None]] = None) -> List[str]:
    """Writes the whole tree under `out_dir`; returns the written paths, sorted.

    Each recording is synthesised once and mixed at every SNR of the config.
    Files already there are overwritten atomically; others are left alone.
    With `log`, one progress line per machine id written.
    """
    validate_config(config)
    out_dir = os.fspath(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"Output path {out_dir!r} exists and is not a folder.")
    if config.layout != "mimii":
        return _generate_dcase_tree(out_dir, config, log)
    written = []
    started = time.perf_counter()
    total = sum(clips_of_class(config, label) for label in LABELS) * len(config.machine_ids) * len(config.snr_db)
    for machine_id in config.machine_ids:
        for label in LABELS:
            for index in range(clips_of_class(config, label)):
                pump, background, offset_db = _parts_unscaled(machine_id, label, index, config)
                for snr in config.snr_db:
                    clip = sum(_mix_parts(pump, background, snr + offset_db))
                    path = clip_path(out_dir, snr, machine_id, label, index)
                    write_wav(path, to_int16(clip), config.sample_rate, extensible=True)
                    written.append(path)
        if log is not None:
            log(f"Synthetic recordings: id_{machine_id} done, {len(written)}/{total} files "
                f"({time.perf_counter() - started:.0f} s).")
    return sorted(written)


def _generate_dcase_tree(out_dir: str, config: SyntheticConfig, log: Optional[Callable[[str], None]]) -> List[str]:
    """Writes the DCASE tree of `config.layout` (mono: the first microphone) under `out_dir`."""
    jobs = dcase_jobs(out_dir, config)
    started = time.perf_counter()
    for number, job in enumerate(jobs, start=1):
        pump, background, offset_db = _parts_unscaled(job.machine_id, job.label, job.index, config, job.speed_factor)
        clip = sum(_mix_parts(pump, background, config.snr_db[0] + offset_db))
        write_wav(job.path, to_int16(clip[:, :1]), config.sample_rate)
        if log is not None and (number == len(jobs) or jobs[number].machine_id != job.machine_id):
            log(f"Synthetic {config.layout} recordings: id_{job.machine_id} done, {number}/{len(jobs)} files "
                f"({time.perf_counter() - started:.0f} s).")
    return sorted(job.path for job in jobs)


__all__ = [
    "LABELS",
    "FAULT_TYPES",
    "FAULT_SEVERITY",
    "PUMPS",
    "PumpSpec",
    "ClipParams",
    "draw_clip_params",
    "synthesize_parts",
    "synthesize_clip",
    "to_int16",
    "snr_folder_name",
    "clip_path",
    "generate_dataset",
    "clips_of_class",
    "validate_config",
]


if __name__ == "__main__":  # `python -m pump_keras.data.synthetic`: the command lives in pump_keras.cli
    from pump_keras.cli.synthetic import main

    sys.exit(main())
