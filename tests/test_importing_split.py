"""The importing package after the split of wfdb_import.py (issue #13, item 5).

Two promises: limb leads are derived with the relations of ``leads.py`` (not a table of
their own), and the import runner writes the very bytes it wrote before the split. The
expected hashes below were taken from files the single-module importer wrote for the same
records and options (``ecgscan import --derive-limb-leads --pad nan``).
"""

from __future__ import annotations

import hashlib
import re
import shutil

import h5py
import numpy as np
import pytest

from ecgscan_cli.importing import ImportOptions, import_records, read_canonical
from ecgscan_cli.importing.twelve_lead import _LIMB_COEF
from ecgscan_cli.leads import LEADS, derived_limb_leads, einthoven_iii, goldberger, lead_snr_db

RECORDS500 = "records500/00000"
RECORDS100 = "records100/00000"


def copy_record(src_dir, stem, dst_dir, new_stem=None, hide=(), edit=None):
    """Copy a PTB-XL record; lead names in ``hide`` are renamed ``X<name>`` (unknown to the importer)."""
    new_stem = new_stem or stem
    dst_dir.mkdir(parents=True, exist_ok=True)
    text = (src_dir / f"{stem}.hea").read_text().replace(stem, new_stem)
    for name in hide:
        text = re.sub(rf" {name}\n", f" X{name}\n", text)
    if edit:
        text = edit(text)
    (dst_dir / f"{new_stem}.hea").write_text(text)
    shutil.copy(src_dir / f"{stem}.dat", dst_dir / f"{new_stem}.dat")
    return dst_dir / new_stem


def test_limb_coefficients_are_read_off_leads_py():
    # the physics (Einthoven, Goldberger) as a·I + b·II, obtained from leads.py's functions
    assert _LIMB_COEF == {"I": (1.0, 0.0), "II": (0.0, 1.0), "III": (-1.0, 1.0), "aVR": (-0.5, -0.5),
                          "aVL": (1.0, -0.5), "aVF": (-0.5, 1.0)}


@pytest.mark.parametrize("record", ["00001_hr", "00031_hr", "00036_hr"])
def test_derived_limb_leads_are_leads_py_relations_on_real_records(ptbxl_dir, tmp_path, record):
    src = ptbxl_dir / RECORDS500
    recorded = read_canonical(src / record)
    derive = ImportOptions(derive_limb_leads=True)

    # I and II present: III, aVR, aVL, aVF are exactly leads.py's relations of I and II
    x = read_canonical(copy_record(src, record, tmp_path / "a", hide=["III", "AVR", "AVL", "AVF"]), options=derive)
    lead_i, lead_ii = x[0].astype(np.float64), x[1].astype(np.float64)
    expect = np.stack([einthoven_iii(lead_i, lead_ii), *goldberger(lead_i, lead_ii)]).astype(np.float32)
    assert np.array_equal(x[2:6], expect)
    assert np.array_equal(x[[0, 1, *range(6, 12)]], recorded[[0, 1, *range(6, 12)]])  # the others untouched
    # derived from I and II only, the four leads agree with leads.py to float32 rounding
    assert lead_snr_db(x).min() > 120.0
    # and with what the cart recorded to PTB-XL's 1 µV rounding (a few µV where it adds up)
    assert np.abs(x[2:6] - recorded[2:6]).max() < 2.6e-3
    assert 30.0 < lead_snr_db(recorded).min() < 80.0   # the recorded leads are not that consistent

    # I and II missing: solved from aVL and aVF, then every limb lead follows leads.py's relations
    y = read_canonical(copy_record(src, record, tmp_path / "b", hide=["I", "II", "III", "AVR"]), options=derive)
    np.testing.assert_allclose(y[2:6], derived_limb_leads(y.astype(np.float64)), rtol=0, atol=3e-7)
    assert np.array_equal(y[4:6], recorded[4:6])           # the two it was given stay as recorded
    assert np.abs(y[:4] - recorded[:4]).max() < 3.6e-3      # µV rounding scaled by the 2×2 solve


# The records of the folder below and what the single-module importer (before the split)
# wrote for each: sha256 of the stored int16 signal (µV, -32768 = NaN), its sum, the first sample
# of the six limb leads.
BEFORE = {
    "dx/00046_hr": ("0244eca9dd583170", -58426, [40, 120, 80, -80, -20, 100]),
    "lr100/00001_lr": ("fc45036634b06510", 6797, [-119, -55, 64, 86, -91, 4]),
    "odd/fs360": ("02217dc88ae4e1e4", 94062, [10, -110, -120, 50, 65, -115]),
    "plain500/00001_hr": ("51cf06b3bf951179", 62217, [-115, -50, 65, 82, -90, 7]),
    "renamed/noII_aVR": ("487ee2e613c1adce", 64976, [-200, -150, 50, 175, -125, -50]),
    "renamed/onlyIII_AVR": ("3f1364cd1a7778b9", -27619, [-35, 111, 145, -38, -90, 128]),
    "short/short4000": ("22b0f2cead9cd27f", -393344373, [-45, -60, -15, 53, -15, -37]),
}


def small_wfdb_folder(ptbxl_dir, root):
    """Real PTB-XL records, edited to take every path of the importer once."""
    hr, lr = ptbxl_dir / RECORDS500, ptbxl_dir / RECORDS100
    copy_record(hr, "00001_hr", root / "plain500")
    copy_record(lr, "00001_lr", root / "lr100")                                       # resampled 100 → 500 Hz
    copy_record(hr, "00033_hr", root / "renamed", "noII_aVR", hide=["II", "AVR"])     # derived from I, III
    copy_record(hr, "00036_hr", root / "renamed", "onlyIII_AVR", hide=["I", "II", "AVL", "AVF"])
    copy_record(hr, "00046_hr", root / "dx", edit=lambda t: t + "# Dx: 164889003,426783006\n")
    copy_record(hr, "00054_hr", root / "short", "short4000",                          # header shorter: padded
                edit=lambda t: t.replace(" 12 500 5000", " 12 500 4000", 1))
    copy_record(hr, "00056_hr", root / "odd", "fs360",                                # 13.9 s at 360 Hz: cropped
                edit=lambda t: t.replace(" 12 500 5000", " 12 360 5000", 1))
    copy_record(hr, "00058_hr", root / "bad", "nodat").with_suffix(".dat").unlink()   # skipped


def test_import_runner_output_unchanged_on_a_small_wfdb_folder(ptbxl_dir, tmp_path):
    small_wfdb_folder(ptbxl_dir, tmp_path / "src")
    path, stats = import_records(tmp_path / "src", tmp_path / "out.h5", derive_limb_leads=True, pad="nan")
    assert (stats.found, stats.imported, dict(stats.skipped)) == (8, 7, {"missing signal file": 1})
    assert (stats.resampled, stats.padded, stats.derived, stats.cropped, stats.header_shorter) == (2, 1, 2, 1, 1)
    with h5py.File(path) as f:
        ids = [i.decode() if isinstance(i, bytes) else i for i in f["id"][()]]
        assert ids == sorted(BEFORE)
        assert f["signal"].dtype == np.int16 and f["signal"].attrs["fs"] == 500.0
        assert list(f["signal"].attrs["leads"]) == list(LEADS)
        for row, rid in enumerate(ids):
            stored = f["signal"][row]
            digest, total, first = BEFORE[rid]
            assert hashlib.sha256(stored.tobytes()).hexdigest()[:16] == digest, rid
            assert int(stored.astype(np.int64).sum()) == total, rid
            assert stored[:6, 0].tolist() == first, rid
        assert list(f["label"].attrs["classes"]) == ["164889003", "426783006"]
        assert f["label"][()].sum(1).tolist() == [2, 0, 0, 0, 0, 0, 0]
        assert f["report"][0].decode() == "atrial fibrillation; sinus rhythm"
        assert f["fold"][()].tolist() == [-1] * 7
        assert (f["signal"][ids.index("short/short4000"), :, 4000:] == -32768).all()   # NaN padding
