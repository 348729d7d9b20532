"""Augmentations of rendered printouts as small registered classes (torch, any device).

- ``base``: :class:`Augmentation`, typed :class:`Params`, the registry and draw order, ``Rng``
- ``geometry``, ``paper``, ``photometric``, ``photo``, ``strokes``: the augmentations
- ``catalogue``: the complete registry (``AUGMENTATIONS``) and ``describe_all``
- ``config``: presets, config files checked against the registry, ``resolve_augment``
- ``draw``: ``draw_params`` → :class:`AugmentDraw`, ``params_to_dicts`` (sidecars)
- ``pipeline``: ``apply_augment`` (the order of steps), ``warp_grid``, ``warp_targets``,
  ``augment_with_targets``

The public front is :mod:`ecgscan_cli.render.augment`.
"""
