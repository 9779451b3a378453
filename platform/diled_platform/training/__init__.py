"""Training: the Ray Train + DeepSpeed trainer (``train``: the driver's ``fit`` and the workers' loop), ZeRO
construction and export (``zero``), memory measurement (``memory``), validation (``validation``),
experiment tracking (``tracking``), the prior stage after the joint run (``prior_stage``), connecting to
Ray (``runtime``), and the worker functions that tests and benchmarks run inside an engine (``probes``)."""
