import numpy as np
import torch

from ecgscan_cli.leads import LEADS, canonical_lead_name, derived_limb_leads, lead_snr_db, with_derived_limb_leads


def test_relations_hold_on_a_projected_dipole():
    # Limb leads are projections of one frontal vector at the standard angles.
    rng = np.random.default_rng(0)
    v = rng.normal(size=(2, 500))
    angle = {"I": 0, "II": 60, "III": 120, "aVR": -150, "aVL": -30, "aVF": 90}
    scale = {"I": 1, "II": 1, "III": 1, "aVR": np.sqrt(3) / 2, "aVL": np.sqrt(3) / 2, "aVF": np.sqrt(3) / 2}
    sig = np.zeros((12, 500))
    for name, a in angle.items():
        r = np.deg2rad(a)
        sig[LEADS.index(name)] = scale[name] * (np.cos(r) * v[0] + np.sin(r) * v[1])
    np.testing.assert_allclose(derived_limb_leads(sig), sig[2:6], atol=1e-12)
    assert np.isinf(lead_snr_db(sig)).all() or (lead_snr_db(sig) > 200).all()


def test_numpy_and_torch_agree():
    x = np.random.default_rng(1).normal(size=(3, 12, 100)).astype(np.float32)
    np.testing.assert_allclose(derived_limb_leads(torch.from_numpy(x)).numpy(), derived_limb_leads(x), rtol=1e-6)
    y = with_derived_limb_leads(torch.from_numpy(x))
    assert torch.allclose(y[:, 2:6], derived_limb_leads(torch.from_numpy(x)))


def test_snr_formula():
    x = np.zeros((12, 1000))
    x[0] = 1.0
    x[1] = 2.0
    x[2] = 1.0 + 0.1  # III should be 1.0: noise 0.1 -> 10*log10(1.21/0.01)
    snr = lead_snr_db(x)
    assert abs(snr[0] - 10 * np.log10(1.1**2 / 0.1**2)) < 1e-9


def test_lead_names():
    assert canonical_lead_name("AVR") == "aVR" and canonical_lead_name(" v1 ") == "V1"
    assert canonical_lead_name("ii") == "II" and canonical_lead_name("MLII") is None
