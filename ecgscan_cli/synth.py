"""Synthetic 12-lead ECGs from a 3-D cardiac dipole: the embedded default data set.

Model
-----
The heart is a single current dipole ``d(t)`` in 3-D (x = patient's left, y = inferior,
z = anterior). Each beat is a sum of Gaussian lobes ``A·exp(-(t-t0)²/2w²)·u`` (P, septal
q, R, S, ST, T...) whose direction ``u`` is rotated per record (electrical axis). Beat
times follow the rhythm (sinus with respiratory heart-rate variability, or the
irregularly irregular RR intervals of atrial fibrillation). The dipole is built in the
frequency domain: an impulse train of the beats (one FFT) times the analytic spectrum of
every lobe, so 1000 records take about a second.

Leads I, II and V1–V6 are projections of ``d(t)`` on their lead vectors; III, aVR, aVL,
aVF are *derived* from I and II, so Einthoven and Goldberger hold exactly before noise
(``lead_snr_db`` is > 100 dB with ``noise=0``, float32 rounding only).

Noise is added at the nine electrodes (RA, LA, LL, V1–V6): baseline wander, muscle
(EMG) noise and power-line hum, then turned into leads with the lead formulas, so it
respects the lead relations like real electrode noise does. Finally the signal is
quantised to 1 µV like a recorder's ADC (PTB-XL's resolution); that is what makes the
recorded limb leads differ slightly from the derived ones, giving a lead-SNR of the same
order as real PTB-XL (~50 dB). ``noise`` scales all of it; ``noise=0`` gives clean,
unquantised signals.

Conditions (:data:`CLASSES`, multi-hot labels): exactly one rhythm among NSR, AFIB,
SBRAD, STACH, plus independently a wide QRS (right-bundle-branch-block-like) and/or ST
elevation (anterior or inferior). Each record gets a short English report generated
from its label with varied wording.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ecgscan_cli import canonical
from ecgscan_cli.leads import derived_limb_leads

# NSR normal sinus rhythm, 60-100 bpm; AFIB atrial fibrillation (irregularly irregular RR, no P
# waves, fibrillatory waves); SBRAD sinus bradycardia, < 60 bpm; STACH sinus tachycardia,
# > 100 bpm; WQRS wide QRS (RBBB-like: rsR' in V1, broad S in I and V6); STE ST elevation
# (anterior or inferior leads, reciprocal depression). Their prompts: prompts/synth.json.
CLASSES: list[str] = ["NSR", "AFIB", "SBRAD", "STACH", "WQRS", "STE"]
RHYTHMS = ("NSR", "AFIB", "SBRAD", "STACH")
_RHYTHM_P = np.array([0.4, 0.2, 0.2, 0.2])
_P_WQRS = 0.25
_P_STE = 0.25
CHUNK = 256  # records generated together (bounds memory; part of the seeded recipe)
MAX_RECORDS = 10_000_000   # ~200 GB of output: beyond that a typo, not a data set
MAX_NOISE = 100.0
MAX_SEED = 2 ** 32 - 1

# Lead vectors (x left, y inferior, z anterior). I and II are frontal; V1-V6 lie in the
# transverse plane with a small inferior component; precordial leads see more voltage.
_I = np.array([1.0, 0.0, 0.0])
_II = np.array([math.cos(math.radians(60)), math.sin(math.radians(60)), 0.0])
_V_ANGLES = (120.0, 95.0, 78.0, 60.0, 35.0, 5.0)   # angle from +x towards +z
_V_GAIN = (1.3, 1.5, 1.5, 1.4, 1.2, 1.0)


def _precordial_vectors() -> np.ndarray:
    out = []
    for a, g in zip(_V_ANGLES, _V_GAIN):
        r = math.radians(a)
        out.append(g * np.array([math.cos(r), 0.15, math.sin(r)]))
    return np.array(out)


_LEAD_VECTORS = np.vstack([_I, _II, _precordial_vectors()])  # [8, 3]: I, II, V1..V6


@dataclass
class SynthBatch:
    ids: list[str]
    signals: np.ndarray   # [N, 12, T] float32 mV
    reports: list[str]
    labels: np.ndarray    # [N, C] uint8 multi-hot
    classes: list[str]
    folds: np.ndarray     # [N] int 1..10

    def __len__(self) -> int:
        return len(self.ids)


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _rotation(rng: np.random.Generator, n: int, sd_deg: float) -> np.ndarray:
    """Small random 3-D rotations [n, 3, 3] (about the three axes, sd in degrees)."""
    a = np.deg2rad(rng.normal(0.0, sd_deg, size=(n, 3)))
    c, s = np.cos(a), np.sin(a)
    one, zero = np.ones(n), np.zeros(n)
    rx = np.stack([one, zero, zero, zero, c[:, 0], -s[:, 0], zero, s[:, 0], c[:, 0]], -1).reshape(n, 3, 3)
    ry = np.stack([c[:, 1], zero, s[:, 1], zero, one, zero, -s[:, 1], zero, c[:, 1]], -1).reshape(n, 3, 3)
    rz = np.stack([c[:, 2], -s[:, 2], zero, s[:, 2], c[:, 2], zero, zero, zero, one], -1).reshape(n, 3, 3)
    return rz @ ry @ rx


def _frontal(angle_deg: np.ndarray, z: np.ndarray | float) -> np.ndarray:
    r = np.deg2rad(angle_deg)
    z = np.broadcast_to(np.asarray(z, dtype=np.float64), r.shape)
    return _unit(np.stack([np.cos(r), np.sin(r), z], -1))


def _draw_labels(rng: np.random.Generator, n: int):
    rhythm = rng.choice(len(RHYTHMS), size=n, p=_RHYTHM_P)
    wqrs = rng.random(n) < _P_WQRS
    ste = rng.random(n) < _P_STE
    labels = np.zeros((n, len(CLASSES)), np.uint8)
    labels[np.arange(n), rhythm] = 1
    labels[:, CLASSES.index("WQRS")] = wqrs
    labels[:, CLASSES.index("STE")] = ste
    return rhythm, wqrs, ste, labels


def _beat_times(rng, rhythm, hr, t_start, t_end):
    """Beat times [n, B] in seconds (NaN = no beat), from t_start (< 0) past t_end."""
    n = len(rhythm)
    rr_mean = 60.0 / hr
    max_beats = int(math.ceil((t_end - t_start) / (0.55 * rr_mean.min()))) + 2
    k = np.arange(max_beats)
    afib = rhythm == RHYTHMS.index("AFIB")
    # sinus: respiratory sinus arrhythmia + small random jitter
    resp_f = rng.uniform(0.15, 0.35, size=(n, 1))
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1))
    rsa = rng.uniform(0.01, 0.05, size=(n, 1))
    sinus_rr = rr_mean[:, None] * (1 + rsa * np.sin(2 * np.pi * resp_f * k * rr_mean[:, None] + phase)
                                   + rng.normal(0, 0.01, size=(n, max_beats)))
    # atrial fibrillation: irregularly irregular, never shorter than 0.55 × mean
    af_rr = rr_mean[:, None] * np.clip(rng.lognormal(0.0, 0.22, size=(n, max_beats)), 0.55, 1.9)
    rr = np.where(afib[:, None], af_rr, sinus_rr)
    first = t_start + rng.uniform(0, 1, size=(n, 1)) * rr[:, :1]
    times = first + np.concatenate([np.zeros((n, 1)), np.cumsum(rr[:, :-1], axis=1)], axis=1)
    times[times > t_end] = np.nan
    return times


def _chunk(rng: np.random.Generator, n: int, fs: float, duration_s: float, noise: float):
    """Generate ``n`` records: returns signals [n,12,T] float32, labels, report fields."""
    t_len = int(round(fs * duration_s))
    pad = int(math.ceil(1.5 * fs))
    length = int(math.ceil(t_len + pad + 1.2 * fs))
    from scipy import fft as sfft

    length = sfft.next_fast_len(length, real=True)

    rhythm, wqrs, ste, labels = _draw_labels(rng, n)
    hr = np.empty(n)
    for r, (lo, hi) in enumerate([(60, 99), (70, 150), (40, 57), (102, 150)]):
        m = rhythm == r
        hr[m] = rng.uniform(lo, hi, size=m.sum())
    afib = rhythm == RHYTHMS.index("AFIB")

    # --- beats -> impulse train -------------------------------------------------
    times = _beat_times(rng, rhythm, hr, -1.2, duration_s + 0.3)
    beat_amp = 1 + rng.normal(0, np.where(afib, 0.06, 0.025)[:, None], size=times.shape)
    ok = np.isfinite(times)
    rows = np.broadcast_to(np.arange(n)[:, None], times.shape)[ok]
    cols = np.round(np.where(ok, times, 0)[ok] * fs).astype(np.int64) + pad
    train = np.zeros((n, length), np.float64)
    np.add.at(train, (rows, cols), beat_amp[ok])
    spec_train = sfft.rfft(train, axis=-1)

    # --- lobes --------------------------------------------------------------------
    rr = 60.0 / hr
    axis = np.clip(rng.normal(50, 22, size=n), -40, 110)       # QRS frontal axis, degrees
    gain = rng.lognormal(0.0, 0.2, size=n)                      # body habitus
    rot = _rotation(rng, n, 8.0)
    pr = rng.uniform(0.13, 0.19, size=n)
    qrs_w = rng.uniform(0.009, 0.012, size=n)
    t_peak = 0.29 * np.sqrt(rr) + rng.normal(0, 0.01, size=n)   # Bazett-like QT
    t_axis = axis + rng.normal(0, 15, size=n)
    t_amp = rng.uniform(0.2, 0.35, size=n)
    lobes = []  # (amp[n], offset[n], width[n], direction[n,3])

    def add(amp, offset, width, direction):
        lobes.append((np.broadcast_to(amp, (n,)), np.broadcast_to(offset, (n,)),
                      np.broadcast_to(width, (n,)), np.broadcast_to(direction, (n, 3))))

    p_amp = np.where(afib, 0.0, rng.uniform(0.08, 0.15, size=n))
    add(p_amp, -pr, rng.uniform(0.018, 0.026, size=n), _frontal(rng.normal(55, 10, size=n), 0.15))
    add(0.12, -0.022, 0.007, _unit([-0.7, 0.05, 0.7]))
    w_scale = np.where(wqrs, 1.5, 1.0)
    r_dir = _frontal(axis, -0.35)
    add(rng.uniform(1.0, 1.5, size=n), 0.0, qrs_w * w_scale, r_dir)
    add(rng.uniform(0.35, 0.55, size=n), np.where(wqrs, 0.034, 0.024), np.where(wqrs, 0.020, 0.010),
        _unit([-0.35, -0.45, -0.8]))
    # RBBB-like terminal forces: late, slow, right and anterior (R' in V1, wide S in I/V6)
    add(np.where(wqrs, rng.uniform(0.6, 0.9, size=n), 0.0), 0.075, 0.020, _unit([-0.75, 0.1, 0.65]))
    # T wave (asymmetric: slow upstroke, faster downstroke); discordant-ish with WQRS
    t_dir = _frontal(t_axis, 0.15)
    t_sign = np.where(wqrs, 0.4, 1.0)[:, None]
    t_dir = _unit(t_dir * t_sign + np.where(wqrs, 1.0, 0.0)[:, None] * _unit([-0.1, 0.2, -0.6]))
    add(t_amp, t_peak - 0.025, 0.055, t_dir)
    add(t_amp * 0.6, t_peak + 0.025, 0.032, t_dir)
    # ST elevation: a broad lobe between J point and T peak towards the injured wall
    inferior = rng.random(n) < 0.4
    st_dir = np.where(inferior[:, None], _unit([-0.1, 1.0, -0.1]), _unit([0.2, -0.15, 1.0]))
    st_amp = np.where(ste, rng.uniform(0.25, 0.45, size=n), 0.0)
    add(st_amp, 0.04 + 0.45 * (t_peak - 0.04), 0.045 + 0.15 * (t_peak - 0.04), st_dir)

    # one beat template per record in the time domain, -0.35 s .. +0.85 s around the R peak
    # (stored circularly so negative lags wrap), then convolved with the impulse train
    lag = np.arange(-int(0.35 * fs), int(0.85 * fs) + 1)
    tau = lag / fs
    template = np.zeros((n, 3, len(lag)), np.float64)
    for amp, off, width, direction in lobes:
        d = np.einsum("nij,nj->ni", rot, direction) * (gain * amp)[:, None]
        g = np.exp(-0.5 * ((tau[None, :] - off[:, None]) / width[:, None]) ** 2)
        template += d[:, :, None] * g[:, None, :]
    buf = np.zeros((n, 3, length), np.float64)
    buf[:, :, lag % length] = template
    spec = sfft.rfft(buf, axis=-1)
    del buf, template
    spec *= spec_train[:, None, :]
    dipole = sfft.irfft(spec, n=length, axis=-1)[:, :, pad:pad + t_len].astype(np.float32)  # [n, 3, T]
    del spec

    t = np.arange(t_len) / fs
    # respiration modulates the amplitude (chest impedance / heart position)
    resp = 1 + rng.uniform(0.02, 0.07, size=(n, 1)) * np.sin(
        2 * np.pi * rng.uniform(0.15, 0.35, size=(n, 1)) * t + rng.uniform(0, 2 * np.pi, size=(n, 1)))
    dipole *= resp[:, None, :].astype(np.float32)
    # fibrillatory waves: a few 4-9 Hz atrial oscillations, mostly seen in V1 and inferior leads
    if afib.any():
        m = int(afib.sum())
        f = rng.uniform(4.0, 9.0, size=(m, 3, 1))
        ph = rng.uniform(0, 2 * np.pi, size=(m, 3, 1))
        a = rng.uniform(0.015, 0.05, size=(m, 3, 1))
        fw = (a * np.sin(2 * np.pi * f * t + ph)).sum(axis=1)               # [m, T]
        dipole[afib] += (_unit([-0.2, 0.6, 0.8])[None, :, None] * fw[:, None, :]).astype(np.float32)

    leads8 = np.matmul(_LEAD_VECTORS[None].astype(np.float32), dipole)                        # I, II, V1..V6
    del dipole
    signals = np.empty((n, 12, t_len), np.float32)
    signals[:, 0:2] = leads8[:, 0:2]
    signals[:, 6:12] = leads8[:, 2:8]
    del leads8

    if noise > 0:
        _add_electrode_noise(rng, signals, fs, noise)
    signals[:, 2:6] = derived_limb_leads(signals)
    if noise > 0:  # 1 µV ADC, lead by lead
        signals *= 1000.0
        np.rint(signals, out=signals)
        signals /= 1000.0
    return signals, labels, rhythm, wqrs, ste, inferior, hr


def _add_electrode_noise(rng, signals, fs, noise):
    """Noise at RA, LA, LL, V1..V6 turned into leads I, II, V1..V6 (in place).

    III/aVR/aVL/aVF are derived afterwards, so electrode noise obeys the lead relations.
    """
    n, _, t_len = signals.shape
    t = np.arange(t_len) / fs
    # baseline wander: smooth random curves from low-frequency sines/cosines (<= 0.5 Hz)
    k = np.arange(1, 9)
    fk = k * 0.5 / len(k)
    basis = np.concatenate([np.cos(2 * np.pi * fk[:, None] * t), np.sin(2 * np.pi * fk[:, None] * t)])  # [16, T]
    wander_scale = noise * rng.lognormal(np.log(0.06), 0.6, size=(n, 1, 1))
    coef = rng.normal(0, 1, size=(n, 9, 16)) / np.concatenate([k, k])[None, None, :] ** 0.5
    elec = np.matmul((coef * wander_scale).astype(np.float32), basis.astype(np.float32))
    # muscle noise (skeletal muscle of the limbs, tremor): white, at the limb electrodes,
    # reaching the chest leads through Wilson's terminal; its level varies a lot
    emg = (noise * rng.lognormal(np.log(0.008), 0.7, size=(n, 1, 1))).astype(np.float32)
    elec[:, 0:3] += rng.standard_normal(size=(n, 3, t_len), dtype=np.float32) * emg
    # power-line hum, 50 or 60 Hz, usually small: a·sin(wt) + b·cos(wt) per electrode
    if fs > 2 * 60:
        is60 = rng.random(n) < 0.5
        hum = noise * rng.exponential(0.004, size=(n, 9, 1)) / math.sqrt(2)
        ab = (rng.normal(0, 1, size=(n, 9, 2)) * hum).astype(np.float32)
        for sel, f in ((~is60, 50.0), (is60, 60.0)):
            if sel.any():
                wave = np.stack([np.sin(2 * np.pi * f * t), np.cos(2 * np.pi * f * t)]).astype(np.float32)
                elec[sel] += np.matmul(ab[sel], wave)
    ra, la, ll = elec[:, 0], elec[:, 1], elec[:, 2]
    signals[:, 0] += la - ra
    signals[:, 1] += ll - ra
    wct = (ra + la + ll) / 3.0
    signals[:, 6:12] += elec[:, 3:9] - wct[:, None, :]


_RHYTHM_TEXT = {
    "NSR": ["sinus rhythm", "normal sinus rhythm", "sinus rhythm at {hr} bpm", "regular sinus rhythm, rate {hr}"],
    "AFIB": ["atrial fibrillation", "atrial fibrillation with {resp} ventricular response",
             "irregularly irregular rhythm without P waves, atrial fibrillation", "AF, ventricular rate about {hr}"],
    "SBRAD": ["sinus bradycardia", "sinus bradycardia at {hr} bpm", "slow sinus rhythm, rate {hr}",
              "marked sinus bradycardia" ],
    "STACH": ["sinus tachycardia", "sinus tachycardia at {hr} bpm", "fast sinus rhythm, rate {hr}",
              "sinus tachycardia, otherwise regular"],
}
_WQRS_TEXT = ["wide QRS complex, right bundle branch block pattern", "complete right bundle branch block",
              "QRS widened with rSR' in V1: right bundle branch block", "intraventricular conduction delay, wide QRS"]
_STE_TEXT = ["ST elevation in the {wall} leads", "{wall} ST elevation, consider acute injury",
             "acute {wall} ST elevation myocardial infarction pattern", "ST segment elevation {leads}"]
_NORMAL_TEXT = ["normal ECG", "otherwise normal ECG", "no acute changes", "normal QRS and ST-T"]
_STE_LEADS = {"inferior": "in II, III and aVF", "anterior": "in V1-V4"}


def _report(rng_choice: np.ndarray, rhythm: str, hr: float, wqrs: bool, ste: bool, inferior: bool) -> str:
    c = iter(rng_choice)
    hr_i = int(round(hr))
    parts = [_RHYTHM_TEXT[rhythm][next(c) % 4].format(hr=hr_i, resp="rapid" if hr >= 100 else "controlled")]
    if wqrs:
        parts.append(_WQRS_TEXT[next(c) % 4])
    else:
        next(c)
    if ste:
        wall = "inferior" if inferior else "anterior"
        parts.append(_STE_TEXT[next(c) % 4].format(wall=wall, leads=_STE_LEADS[wall]))
    else:
        next(c)
    if not (wqrs or ste) and rhythm == "NSR":
        parts.append(_NORMAL_TEXT[next(c) % 4])
    sep = [". ", "; ", ", "][next(c) % 3]
    if sep == ". ":
        parts = [p[0].upper() + p[1:] for p in parts]
    text = sep.join(parts)
    return text[0].upper() + text[1:] + "."


def _iter_chunks(n: int, seed: int, fs: float, duration_s: float, noise: float):
    """Yield SynthBatch chunks of up to CHUNK records; deterministic for (n, seed, ...)."""
    if n < 0:
        raise ValueError("n must be >= 0")
    fold_rng = np.random.default_rng([int(seed), 0xF01D])
    folds_all = fold_rng.permutation(np.arange(n) % 10) + 1
    for c0 in range(0, n, CHUNK):
        m = min(CHUNK, n - c0)
        rng = np.random.default_rng([int(seed), c0 // CHUNK])
        signals, labels, rhythm, wqrs, ste, inferior, hr = _chunk(rng, m, fs, duration_s, noise)
        choices = rng.integers(0, 12, size=(m, 5))
        reports = [_report(choices[i], RHYTHMS[rhythm[i]], hr[i], bool(wqrs[i]), bool(ste[i]), bool(inferior[i]))
                   for i in range(m)]
        ids = [f"synth-{seed}-{c0 + i:06d}" for i in range(m)]
        yield SynthBatch(ids, signals, reports, labels, list(CLASSES), folds_all[c0:c0 + m].astype(int))


def synthesize(n: int, seed: int = 0, fs: float = canonical.FS, duration_s: float = canonical.DURATION_S,
               noise: float = 1.0) -> SynthBatch:
    """``n`` labelled synthetic 12-lead ECGs (see :func:`_synthesize`), with as many BLAS
    threads as the machine has free cores."""
    # numpy's BLAS starts one thread per core: on a busy machine those threads wait for
    # each other (1000 records: 5.9 s with the default, 0.76 s with one thread at load 1.9 on 2 cores)
    from ecgscan_cli.threads import limited_threads

    with limited_threads():
        return _synthesize(n, seed, fs, duration_s, noise)


def _synthesize(n: int, seed: int = 0, fs: float = canonical.FS, duration_s: float = canonical.DURATION_S,
                noise: float = 1.0) -> SynthBatch:
    """``n`` labelled synthetic 12-lead ECGs, ``[n, 12, round(fs·duration_s)]`` float32 mV.

    Same arguments → identical output. ``noise`` scales baseline wander, muscle noise and
    hum (0 gives clean signals whose limb leads obey Einthoven/Goldberger exactly).
    """
    chunks = list(_iter_chunks(int(n), seed, fs, duration_s, noise))
    t_len = int(round(fs * duration_s))
    if not chunks:
        return SynthBatch([], np.zeros((0, 12, t_len), np.float32), [], np.zeros((0, len(CLASSES)), np.uint8),
                          list(CLASSES), np.zeros(0, int))
    if len(chunks) == 1:
        return chunks[0]
    signals = np.empty((n, 12, t_len), np.float32)
    i = 0
    for ch in chunks:
        signals[i:i + len(ch)] = ch.signals
        i += len(ch)
    return SynthBatch([x for ch in chunks for x in ch.ids], signals, [x for ch in chunks for x in ch.reports],
                      np.concatenate([ch.labels for ch in chunks]), list(CLASSES),
                      np.concatenate([ch.folds for ch in chunks]))


def write_synth(path, n: int, seed: int = 0, overwrite: bool = False, noise: float = 1.0,
                progress=None) -> Path:
    """Write ``n`` synthetic records to a signals file (500 Hz, 10 s), chunk by chunk.

    ``progress(1)`` is called after each record written, if given.
    """
    from ecgscan_cli.errors import EcgscanError
    from ecgscan_cli.formats.signals import SignalsWriter

    if not 1 <= n <= MAX_RECORDS:
        raise EcgscanError(f"number of records must be 1 to {MAX_RECORDS:,}, got {n}")
    if not (math.isfinite(noise) and 0 <= noise <= MAX_NOISE):   # inf or NaN noise makes every sample NaN
        raise EcgscanError(f"noise must be a number from 0 to {MAX_NOISE:g}, got {noise}")
    if not 0 <= int(seed) <= MAX_SEED:
        raise EcgscanError(f"seed must be 0 to {MAX_SEED}, got {seed}")
    source = f"synthetic (ecgscan synth, n={n}, seed={seed}, noise={noise})"
    with SignalsWriter(path, fs=canonical.FS, n_samples=canonical.N_SAMPLES, classes=CLASSES, overwrite=overwrite, source=source,
                       attrs={"synth_seed": int(seed), "synth_noise": float(noise)}, expected_rows=n) as w:
        for ch in _iter_chunks(int(n), seed, canonical.FS, canonical.DURATION_S, noise):
            for i in range(len(ch)):
                w.append(ch.ids[i], ch.signals[i], report=ch.reports[i], label=ch.labels[i], fold=int(ch.folds[i]))
                if progress is not None:
                    progress(1)
    return Path(path)
