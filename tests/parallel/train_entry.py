"""`moelab` as torchrun (or a plain interpreter) starts it in the tests, in float64 when MOELAB_TEST_FLOAT64=1."""

import os
import sys

import torch

if os.environ.get("MOELAB_TEST_FLOAT64") == "1":
    torch.set_default_dtype(torch.float64)

from moelab.cli import main  # noqa: E402 - after the default dtype is set

sys.exit(main(sys.argv[1:]))
