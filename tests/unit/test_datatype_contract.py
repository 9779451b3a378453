"""The contract every built-in data type keeps with the platform, checked fast (no data loaded, nothing
trained): its options, metrics and outputs, a CPU preset that selects it, and a codec that says what
Serve accepts and what it needs under ZeRO-3. The slow end-to-end plug-in test runs one outside data type."""

import dataclasses
import inspect
import json

import pytest

from diled.codecs import Codec, codec_class
from diled_platform.config import PRESETS_DIR, load_config
from diled_platform.datatypes.base import DataType, Metric, builtin_names, datatype_class
from diled_platform.options import DataOptions

NAMES = builtin_names()


def test_the_built_in_data_types_are_found():
    assert {"text", "protein", "image", "vector"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_a_data_type_keeps_the_contract(name):
    cls = datatype_class(name)
    assert issubclass(cls, DataType) and cls.name == name and not inspect.isabstract(cls)
    # its options: a DataOptions subclass whose defaults validate and which survive JSON
    assert issubclass(cls.Options, DataOptions)
    options = cls.Options()
    options.validate()
    assert json.loads(json.dumps(dataclasses.asdict(options)))
    # its metrics: each a Metric with a direction, keys unique; the files its report writes
    assert cls.metrics and all(isinstance(m, Metric) and isinstance(m.higher_is_better, bool) for m in cls.metrics)
    assert len({m.key for m in cls.metrics}) == len(cls.metrics)
    assert isinstance(cls.outputs, tuple) and all(isinstance(o, str) and o for o in cls.outputs)
    assert isinstance(cls.harness_steps, int) and cls.harness_steps > 0
    assert isinstance(cls.sources(), tuple)
    # its CPU preset selects it and names a codec that says what it takes and needs
    assert (PRESETS_DIR / f"{cls.preset}.yaml").is_file(), cls.preset
    cfg = load_config(cls.preset, [])
    assert cfg.data.type == name
    codec = codec_class(cfg.model.codec)
    assert issubclass(codec, Codec) and codec.input_kind in ("strings", "arrays")
    assert isinstance(codec.decode_options, tuple) and isinstance(codec.auxiliary_terms, tuple)
    assert inspect.ismethod(codec.prepare_partitioned_build)  # a classmethod: called before zero.Init


def test_an_unknown_data_type_is_named_with_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown data type 'sound'.*text"):
        datatype_class("sound")
