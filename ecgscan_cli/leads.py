"""Lead physics: the 12 standard leads and the relations between the limb leads.

The six limb leads are all projections of the same frontal-plane cardiac vector, so
four of them follow from leads I and II:

* Einthoven:  III = II - I
* Goldberger: aVR = -(I + II) / 2,  aVL = I - II / 2,  aVF = II - I / 2

Every function here is plain arithmetic on the last two axes ``[..., lead, time]`` and
works unchanged on numpy arrays and torch tensors.
"""

from __future__ import annotations

LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
LEAD_INDEX = {name: i for i, name in enumerate(LEADS)}
LIMB_DERIVED: tuple[str, ...] = ("III", "aVR", "aVL", "aVF")
EINTHOVEN_LEADS: tuple[str, ...] = ("III",)
GOLDBERGER_LEADS: tuple[str, ...] = ("aVR", "aVL", "aVF")

_ALIASES = {name.upper(): name for name in LEADS}
_ALIASES.update({"D1": "I", "D2": "II", "D3": "III", "DI": "I", "DII": "II", "DIII": "III"})


def canonical_lead_name(name: str) -> str | None:
    """Map a lead name as found in files (``AVR``, ``avr``, ``v1``, ``DII``) to ours, or None."""
    key = str(name).strip().upper().replace(" ", "").replace("-", "")
    return _ALIASES.get(key)


def _stack(parts, like):
    if type(like).__module__.startswith("torch"):
        import torch

        return torch.stack(parts, dim=-2)
    import numpy as np

    return np.stack(parts, axis=-2)


def einthoven_iii(lead_i, lead_ii):
    """III = II - I."""
    return lead_ii - lead_i


def goldberger(lead_i, lead_ii):
    """(aVR, aVL, aVF) from leads I and II."""
    return -(lead_i + lead_ii) / 2, lead_i - lead_ii / 2, lead_ii - lead_i / 2


def derived_limb_leads(signal):
    """Leads III, aVR, aVL, aVF derived from I and II of ``signal[..., 12, T]`` → ``[..., 4, T]``."""
    lead_i, lead_ii = signal[..., 0, :], signal[..., 1, :]
    return _stack([einthoven_iii(lead_i, lead_ii), *goldberger(lead_i, lead_ii)], lead_i)


def with_derived_limb_leads(signal):
    """A copy of ``signal`` whose III/aVR/aVL/aVF are replaced by those derived from I and II."""
    out = signal.clone() if hasattr(signal, "clone") else signal.copy()
    out[..., 2:6, :] = derived_limb_leads(signal)
    return out


def snr_db(reference, estimate, axis=-1):
    """SNR in dB = 10·log10(Σ x² / Σ (x - x̂)²) along ``axis``, ignoring NaN samples (numpy)."""
    import numpy as np

    x = np.asarray(reference, dtype=np.float64)
    x_hat = np.asarray(estimate, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(x_hat)
    signal_power = np.where(ok, x * x, 0.0).sum(axis=axis)
    noise_power = np.where(ok, (x - x_hat) ** 2, 0.0).sum(axis=axis)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 10.0 * np.log10(signal_power / noise_power)


def lead_snr_db(signal):
    """Per-lead SNR (dB) of the recorded III, aVR, aVL, aVF against those derived from I, II
    (Einthoven, Goldberger): the paper's lead-SNR, how consistent a recording's limb leads are.

    Parameters
    ----------
    signal : array [..., 12, T]
        mV, leads in :data:`LEADS` order; NaN samples are left out.

    Returns
    -------
    array [..., 4]
        dB in :data:`LIMB_DERIVED` order; +inf where a lead matches its derivation exactly.
    """
    import numpy as np

    signal = np.asarray(signal)
    return snr_db(signal[..., 2:6, :], derived_limb_leads(signal), axis=-1)
