"""cenas_jax: carbon- and energy-efficient neural architecture search in JAX.

Import is cheap on purpose: sub-packages (``cenas_jax.data``, ``cenas_jax.carbon``, ``cenas_jax.moo``,
...) are imported explicitly by the caller, so ``import cenas_jax`` never pulls in JAX or pandas.
"""

__version__ = "0.1.0"
