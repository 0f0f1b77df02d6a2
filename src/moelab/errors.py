"""The one exception type for bad user input: the CLI prints its message on one line and exits 2."""


class MoelabError(ValueError):
    """Bad input (a config, a preset name, a flag value) described in one line."""
