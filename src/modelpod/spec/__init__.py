"""modelpod.yaml: the file model, its loader and its JSON schema."""

from modelpod.spec.load import (
    BUILTIN_PROFILES,
    deep_merge,
    find_spec_file,
    load_spec,
    profile_names,
    spec_digest,
)
from modelpod.spec.model import FORMATS, SpecFile
from modelpod.spec.resolved import Example, ResolvedImage, ResolvedModel, Spec
from modelpod.spec.schema import json_schema

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
