"""JSON-schema hard constraint (the ``jsonschema`` package).

    R(x, y) = 0 if json.loads(y) is valid under the schema else -inf

Text that is not JSON at all is -inf too. Surrounding whitespace is ignored. The schema is
checked when the reward is built (a bad schema is a ValueError, not a -inf at run time).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rewards.base import TextReward


def read_schema(source: str) -> Any:
    """Inline JSON (starts with ``{``) or a path to a JSON file -> the schema object."""
    text = source.strip()
    if not text.startswith("{") and not text.startswith("["):
        path = Path(text).expanduser()
        if not path.is_file():
            raise ValueError(f"JSON schema file not found: {source!r} (give a path or inline JSON)")
        text = path.read_text()
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"JSON schema is not valid JSON: {e}") from None


class JsonSchemaConstraint(TextReward):
    def __init__(self, schema: Any, codec: Any = None):
        super().__init__(codec)
        import jsonschema

        if isinstance(schema, str):
            schema = read_schema(schema)
        if not isinstance(schema, (dict, bool)):
            raise ValueError(f"a JSON schema must be an object or a boolean, got {type(schema).__name__}")
        cls = jsonschema.validators.validator_for(schema)
        try:
            cls.check_schema(schema)
        except jsonschema.SchemaError as e:
            raise ValueError(f"bad JSON schema: {e.message}") from None
        self.schema = schema
        self.validator = cls(schema)
        self.name = "json_schema:" + json.dumps(schema, separators=(",", ":"))

    def allowed(self, text: str) -> bool:
        try:
            value = json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            return False
        return self.validator.is_valid(value)

    async def score_text(self, prompt: str, completions: list[str]) -> list[float]:
        return [0.0 if self.allowed(y) else -math.inf for y in completions]
