"""mfhpo: multi-fidelity Bayesian hyperparameter optimization for GMP + SingleNN potentials."""

__version__ = "0.1.0"
