"""List the schema's top-level fields (name, type, required, description) for the prompt."""

import json
import sys

schema = json.load(sys.stdin)["schema"]
required = set(schema.get("required", []))
fields = []
for name, prop in sorted(schema.get("properties", {}).items()):
    kind = prop.get("type", "any")
    fields.append({
        "name": name,
        "type": " or ".join(kind) if isinstance(kind, list) else kind,
        "required": name in required,
        "description": prop.get("description", ""),
    })
print(json.dumps({"fields": fields}, sort_keys=True))
