"""`python -m moelab`: the CLI, as torchrun starts it (`torchrun --nproc-per-node N -m moelab train ... --ep E`)."""

import sys

from moelab.cli import main

sys.exit(main())
