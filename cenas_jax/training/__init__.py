"""Training infrastructure shared by every network: the device mesh, the train/eval step, checkpoints.

- ``mesh``: the 1-D explicit ``data`` mesh, batch sharding, multi-host initialisation.
- ``step``: ``TrainState`` and the padded, donated, compile-once data-parallel train and eval steps.
- ``checkpoint``: ``Checkpointer`` over orbax.
"""
