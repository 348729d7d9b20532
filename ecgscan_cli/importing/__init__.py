"""PTB-XL (folders or archives) and WFDB folders → canonical 12-lead records in a signals file.

One job per module, as in wfdb-python:

* :mod:`.wfdb_header`  parsing ``.hea`` headers, refusing hostile ones;
* :mod:`.wfdb_signal`  reading signal files (``.dat`` formats, challenge ``.mat``) into mV;
* :mod:`.twelve_lead`  the canonical form: leads by name, limb leads derived with
  :mod:`ecgscan_cli.leads`' relations, resampled to ``canonical.FS``, cut or padded to
  ``canonical.N_SAMPLES``;
* :mod:`.ptbxl_source` where a PTB-XL copy keeps its CSVs and records (folder, archive);
* :mod:`.ptbxl`        PTB-XL metadata: reports, folds, the benchmark's four label sets;
* :mod:`.wfdb_folder`  folders of WFDB records and their ``# Dx:`` labels;
* :mod:`.label_sets`, :mod:`.tasks`  label-set names; one task per record;
* :mod:`.plan`         what to import from a source; :mod:`.workers` the reader processes;
* :mod:`.runner`       the import: read, canonicalise, write, count what was skipped.

Bad records (missing/truncated signal file, missing or unknown leads, unusable sampling
rate, infinite values, amplitudes beyond ±32.767 mV) are skipped and counted by reason,
or stop the import with ``strict=True``.
"""

from __future__ import annotations

from ecgscan_cli.importing.errors import RecordError
from ecgscan_cli.importing.label_sets import LABEL_SETS, PTBXL_LABEL_SETS, parse_label_sets
from ecgscan_cli.importing.plan import ImportPlan, plan_import
from ecgscan_cli.importing.ptbxl import ptbxl_classes, ptbxl_labels, ptbxl_tasks, read_scp_statements
from ecgscan_cli.importing.ptbxl_source import PtbxlSource, find_ptbxl, is_ptbxl_root, locate_records
from ecgscan_cli.importing.runner import ImportStats, import_records, iter_signals, run_import
from ecgscan_cli.importing.tasks import Task
from ecgscan_cli.importing.twelve_lead import ImportOptions, canonicalize, derive_missing_limb_leads, read_canonical
from ecgscan_cli.importing.wfdb_folder import dx_report, find_records, folder_tasks
from ecgscan_cli.importing.wfdb_header import Header, parse_header, parse_header_text
from ecgscan_cli.importing.wfdb_signal import read_wfdb

__all__ = [
    "RecordError", "LABEL_SETS", "PTBXL_LABEL_SETS", "parse_label_sets", "ImportPlan", "plan_import",
    "ptbxl_classes", "ptbxl_labels", "ptbxl_tasks", "read_scp_statements", "PtbxlSource", "find_ptbxl",
    "is_ptbxl_root", "locate_records", "ImportStats", "import_records", "iter_signals", "run_import", "Task",
    "ImportOptions", "canonicalize", "derive_missing_limb_leads", "read_canonical", "dx_report", "find_records",
    "folder_tasks", "Header", "parse_header", "parse_header_text", "read_wfdb",
]
