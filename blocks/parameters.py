"""The blocks as flow parameters: a schema under which a picked block document validates.

A flow parameter typed as a block class (``warehouse_block: WarehouseBlock | None``) carries
the block's JSON schema in the flow's parameter schema; Prefect's run form renders it as a
picker of saved block documents and sends the pick as ``{"$ref": {"block_document_id": ...}}``.
The server validates that value against ``oneOf: [the block's schema, a $ref object]``
(``prefect.utilities.schema_tools.validation.preprocess_schema``). A block whose fields all have
defaults, like ours, has no ``required`` fields and (``Block`` allows extra fields) matches the
reference object as well, so ``oneOf`` finds two matches and rejects every picked block ("is not
valid under any of the given schemas"). The UI drops ``additionalProperties`` before it
validates, so the block's parameter schema lists its fields as ``required`` instead (a block
document holds every field), and a reference matches the ``$ref`` branch only.

Only the parameter schema changes: the block type's own schema (the UI's block form, its
checksum) and the loading and validation of blocks at run time are Prefect's as before.
"""

from __future__ import annotations

from typing import Any

from prefect.blocks.core import Block, schema_extra
from pydantic import ConfigDict


def block_parameter_schema(schema: dict[str, Any], model: type[Block]) -> None:
    """Prefect's block schema extras (type slug, secret fields, ...), every field required."""
    schema_extra(schema, model)
    schema["required"] = list(schema.get("properties", {}))


class ParameterBlock(Block):
    """A block that flows take as a parameter, picked in the run form (an abstract base)."""

    model_config = ConfigDict(json_schema_extra=block_parameter_schema)

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The block type's own schema, as Prefect registers it: no field is required."""
        schema = super().model_json_schema(*args, **kwargs)
        schema.pop("required", None)
        return schema
