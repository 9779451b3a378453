"""Sweeps: Ray Tune with Optuna and ASHA over any config key (``tune``), and their plots (``plots``)."""
