"""The ECG-Scan pretraining run, in parts (``ecgscan_cli.train.pretrain`` puts them together).

* :mod:`.config`       the training config: presets, config files, flags, checks;
* :mod:`.run_folder`   the run folder: create (under a temporary name until the first
  checkpoint), overwrite (swapped in only then), resume; a lock against a second writer;
* :mod:`.objective`    the model's losses, the frozen features, the optimizer;
* :mod:`.teacher`      the built-in signal teacher, trained first when none is given;
* :mod:`.checkpointer` ``last`` (with the training state) and ``best`` (the rule, once);
* :mod:`.interrupts`   Ctrl-C, SIGTERM, SIGHUP wait for the running step to finish;
* :mod:`.loop`         building the parts, the step, validation, the run.
"""
