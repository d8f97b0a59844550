"""placeholder"""
class FeatureCache:
    pass
