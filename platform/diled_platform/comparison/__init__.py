"""Comparison: DiLED's baselines as config changes (``baselines``) and the harness that trains and evaluates
them over seeds into mean +/- std tables (``evaluation``)."""
