"""The HDF5 files ecgscan commands pass to each other (signals, images, embeddings).

Each file carries a root attribute ``ecgscan_format`` = ``"ecgscan-<kind>/<version>"``
so a reader can refuse anything else with a clear message. See docs/formats.md.
"""

from ecgscan_cli.formats.common import file_kind, open_checked
from ecgscan_cli.formats.signals import SignalsFile, SignalsWriter, write_signals

__all__ = ["SignalsFile", "SignalsWriter", "write_signals", "open_checked", "file_kind"]
