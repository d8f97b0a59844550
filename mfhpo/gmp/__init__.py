"""Native GMP (Gaussian multipole) fingerprints in PyTorch: see docs/featurizer.md.

Public API::

    from mfhpo.gmp import GMPSetting, featurize, featurize_many, FeaturizeOptions, FeatureCache, Features, dense_dfp
"""

from mfhpo.gmp.cache import FeatureCache
from mfhpo.gmp.featurizer import FeaturizeOptions, Features, dense_dfp, featurize, featurize_many
from mfhpo.gmp.setting import GMPSetting

__all__ = ["FeatureCache", "Features", "FeaturizeOptions", "GMPSetting", "dense_dfp", "featurize", "featurize_many"]
