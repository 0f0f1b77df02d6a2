"""moelab: dense or Mixture-of-Experts? Model the economics, build both, measure, decide."""

__version__ = "0.1.0"
