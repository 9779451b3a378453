"""Data types: one module per kind of data (vector, text, protein, image), each holding its options, splits,
preparation, report and metrics (``base.py`` says what a data type is and how a config finds one)."""

from diled_platform.datatypes.base import (DataType, Metric, builtin_names, datatype_class, datatype_for,
                                           driver_dataset, type_of_source)

__all__ = ["DataType", "Metric", "builtin_names", "datatype_class", "datatype_for", "driver_dataset", "type_of_source"]
