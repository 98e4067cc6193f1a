"""The JSON schema of modelpod.yaml, generated from the file model."""

from __future__ import annotations

from typing import Any

from modelpod.specfile.model import SpecFile

SCHEMA_ID = "https://modelpod.dev/schema/modelpod.schema.json"


def json_schema() -> dict[str, Any]:
    schema = SpecFile.model_json_schema(by_alias=True, mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID, **schema}
