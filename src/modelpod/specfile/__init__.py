"""modelpod.yaml: the file model, its loader and its JSON schema."""

from modelpod.specfile.load import (
    BUILTIN_PROFILES,
    deep_merge,
    find_spec_file,
    load_spec,
    profile_names,
    spec_digest,
)
from modelpod.specfile.model import FORMATS, SpecFile
from modelpod.specfile.resolved import Example, ResolvedImage, ResolvedModel, Spec
from modelpod.specfile.schema import json_schema

__all__ = [
    "BUILTIN_PROFILES",
    "FORMATS",
    "Example",
    "ResolvedImage",
    "ResolvedModel",
    "Spec",
    "SpecFile",
    "deep_merge",
    "find_spec_file",
    "json_schema",
    "load_spec",
    "profile_names",
    "spec_digest",
]
