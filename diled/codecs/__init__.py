"""Codecs: one file per data type, all with the protocol of ``diled.codecs.base``."""

from diled.codecs.base import (CODECS, Codec, VectorCodec, build_codec, builtin_codec_names, check_codec_args,
                               codec_class, codec_reference, register_codec)

__all__ = ["CODECS", "Codec", "VectorCodec", "build_codec", "builtin_codec_names", "check_codec_args", "codec_class",
           "codec_reference", "register_codec"]
