"""Native GMP (Gaussian multipole) fingerprints in PyTorch: see docs/featurizer.md.

Public API::

    from mfhpo.gmp import GMPSetting, featurize, featurize_many, FeatureCache, Features, dense_dfp
"""

from mfhpo.gmp.setting import GMPSetting
from mfhpo.gmp.featurizer import Features, dense_dfp, featurize, featurize_many
from mfhpo.gmp.cache import FeatureCache

__all__ = ["GMPSetting", "Features", "dense_dfp", "featurize", "featurize_many", "FeatureCache"]
