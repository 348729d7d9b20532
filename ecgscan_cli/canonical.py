"""The canonical signal form every ecgscan file, renderer and model agrees on.

12 leads in ``leads.LEADS`` order, 10 s at 500 Hz, millivolts. Readers convert to it
(``import``), writers record it (the ``fs`` attribute of a signals file), and a model
stores the length it was built for in its config (``ModelConfig.n_samples``/``fs``), so
code that holds a file or a checkpoint reads the numbers from there; these constants are
the defaults and the one place they are written down.
"""

from __future__ import annotations

FS: float = 500.0          # samples per second
DURATION_S: float = 10.0   # seconds per record
N_SAMPLES: int = 5000      # FS * DURATION_S
N_LEADS: int = 12
