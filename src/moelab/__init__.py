"""moelab: dense or Mixture-of-Experts? Model the economics, build both, measure, decide."""


def __getattr__(name: str) -> str:
    """`moelab.__version__`, read from the installed package's metadata on first use (kept out of imports)."""
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("moelab")
        except PackageNotFoundError:  # a source tree on sys.path, not installed
            return "0+unknown"
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
