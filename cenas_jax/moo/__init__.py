"""Multi-objective optimization: dominance, hypervolume, and LaMOO's learned space partitions.

All objectives are maximized (negate costs, or pass ``minimize=True`` to ``hypervolume``). JAX is
imported only when an SVM is first fitted. For your own objectives, ``LaMOOSearch`` is LaMOO with an
ask-and-tell interface, over a finite candidate set or a sampler.
"""

from cenas_jax.moo.ask_tell import LaMOOSearch
from cenas_jax.moo.gp import expected_hypervolume_improvement_2d, fit_gp, gp_predict
from cenas_jax.moo.hypervolume import hypervolume, hypervolume_2d, hypervolume_contributions
from cenas_jax.moo.lamoo import (LaMOOConfig, LaMOOState, Node, Region, Tree, build_tree,
                                 lamoo_step, node_ucb, propose, region_candidates, select_path,
                                 split_labels)
from cenas_jax.moo.pareto import (dominance_counts, dominance_matrix, dominates,
                                  non_dominated_mask, non_dominated_sort)
from cenas_jax.moo.svm import KernelSVM, decision_function, fit_svm, predict

__all__ = [
    "KernelSVM", "LaMOOConfig", "LaMOOSearch", "LaMOOState", "Node", "Region", "Tree", "build_tree",
    "decision_function", "dominance_counts", "dominance_matrix", "dominates",
    "expected_hypervolume_improvement_2d", "fit_gp", "fit_svm", "gp_predict", "hypervolume",
    "hypervolume_2d", "hypervolume_contributions", "lamoo_step", "node_ucb",
    "non_dominated_mask", "non_dominated_sort", "predict", "propose", "region_candidates",
    "select_path", "split_labels",
]
