"""The digitiser: ECG page images → 12-lead signals (TraceNet maps, then page geometry,
layout, vectorisation). Entry points: :func:`ecgscan_cli.digitize.image.digitize_image`,
:func:`ecgscan_cli.digitize.trainer.train_digitizer`."""
