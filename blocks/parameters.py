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

from typing import Any, ClassVar, Self

from prefect.blocks.core import Block, schema_extra
from pydantic import BaseModel, ConfigDict, SecretStr


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


class ConfigBlock(ParameterBlock):
    """A configuration model of :mod:`sales_etl.settings` saved in Prefect (an abstract base).

    The block's fields are the model's own (:func:`sales_etl.settings.field_of`: same defaults,
    same limits), under the model's names unless ``_config_names`` renames one for the block form
    (``connection_string`` for ``url``). :meth:`config_values` and :meth:`from_config` map every
    such field, so no block writes the mapping by hand; an empty text or secret is None.
    """

    _config_model: ClassVar[type[BaseModel]]
    _config_names: ClassVar[dict[str, str]] = {}

    @classmethod
    def _shared_fields(cls) -> dict[str, str]:
        """Block field -> model field, for each block field the model has."""
        names = {field: cls._config_names.get(field, field) for field in cls.model_fields}
        return {
            field: name for field, name in names.items() if name in cls._config_model.model_fields
        }

    @classmethod
    def from_config(cls, config: BaseModel) -> Self:
        """A block holding the same settings as ``config``."""
        return cls(**cls.block_values(config))

    @classmethod
    def block_values(cls, config: BaseModel) -> dict[str, Any]:
        """``config``'s settings as the block's keyword arguments."""
        return {field: getattr(config, name) for field, name in cls._shared_fields().items()}

    def config_values(self) -> dict[str, Any]:
        """The block's settings as the model's keyword arguments (an empty one as None)."""
        values = {name: getattr(self, field) for field, name in self._shared_fields().items()}
        return {name: None if _empty(value) else value for name, value in values.items()}


def _empty(value: Any) -> bool:
    text = value.get_secret_value() if isinstance(value, SecretStr) else value
    return text is None or (isinstance(text, str) and not text.strip())
