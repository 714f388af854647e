"""Memorization and diversity metrics: pure, jitted, memory-bounded functions.

* :mod:`memjax.metrics.memorization` -- exact nearest neighbours, normalized L2 (Carlini et
  al.; paper 000 eq. 7), AMS / UMS (paper 001 eqs. 14-15), similarity fractions (paper 002).
* :mod:`memjax.metrics.stats` -- Frechet distance, Welch's t-test, AUROC.
* :mod:`memjax.metrics.features` -- pluggable feature functions.
* :mod:`memjax.metrics.pointwise` -- pointwise memorization (paper 001 eqs. 1-2).
* :mod:`memjax.metrics.embedding`, :mod:`memjax.metrics.hull`, :mod:`memjax.metrics.diverse` --
  exact t-SNE, convex hulls and diverse samples (paper 003 eq. 18, appendix A).
"""

from memjax.metrics.diverse import KnnSupport, TsneHull, diverse_samples, knn_support, tsne_hull
from memjax.metrics.features import classifier_features, compute_features, l2_normalized, pixels
from memjax.metrics.hull import Hull, convex_hull, in_hull
from memjax.metrics.memorization import (BANDS, AmsUms, Band, NormalizedL2, SimilaritySummary, ams_ums,
                                         ams_ums_from_best, best_match, extracted,
                                         nearest_neighbours, normalized_l2, similarity_fractions,
                                         similarity_summary)
from memjax.metrics.pointwise import PointwiseMemorization, pointwise_memorization
from memjax.metrics.stats import TTestResult, auroc, frechet_distance, welch_t_test
from memjax.metrics.embedding import joint_probabilities, kl_divergence, tsne

__all__ = [
    "BANDS", "AmsUms", "Band", "Hull", "KnnSupport", "NormalizedL2", "PointwiseMemorization",
    "SimilaritySummary", "TTestResult", "TsneHull", "ams_ums", "ams_ums_from_best", "auroc",
    "best_match", "classifier_features", "compute_features", "convex_hull", "diverse_samples",
    "extracted", "frechet_distance", "in_hull", "joint_probabilities", "kl_divergence",
    "knn_support", "l2_normalized", "nearest_neighbours", "normalized_l2", "pixels",
    "pointwise_memorization", "similarity_fractions", "similarity_summary", "tsne", "tsne_hull",
    "welch_t_test",
]
