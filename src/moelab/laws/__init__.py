"""Scaling laws measured here: a grid of models by active size (grid), trained on one budget (sweep), fitted to
L(C) = E + A*C^-alpha and the seeds' (C*E)^-beta form (fit, fits)."""
