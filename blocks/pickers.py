"""Block pickers for the Prefect UI's run forms.

A flow parameter field typed `CloudBlock` or `SSHKeyBlock` holds a block's *name* (a string is
what the registry keeps and what tasks take), while the deployment's parameter schema points at
the block type's definition, so the UI's Custom run form shows a dropdown of the saved blocks.
The UI sends the chosen block as ``{"$ref": {"block_document_id": …}}``; Prefect loads the block
before the flow starts, and the validator here turns it back into its name. A plain name
(``"giessen"``) is accepted too: the CLI, subflows and tests pass names.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

from hybridgrid.blocks.openstack import OpenStackCredentials
from hybridgrid.blocks.ssh import SSHKey


def block_name(value: Any) -> Any:
    """A loaded block → the name it was saved under; anything else unchanged."""
    name = getattr(value, "_block_document_name", None)
    if name is not None:
        return name
    if hasattr(value, "_block_document_id"):  # a block that was never saved has no name
        raise ValueError("choose a saved block (this one has no name)")
    return value


class _Picker:
    def __init__(self, block: type) -> None:
        self.block = block

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_before_validator_function(
            block_name,
            handler(source),
            # the form shows the block type's picker; the value validated is the name
            json_schema_input_schema=handler.generate_schema(self.block),
        )


CloudBlock = Annotated[str, _Picker(OpenStackCredentials)]
SSHKeyBlock = Annotated[str, _Picker(SSHKey)]


def no_default(schema: dict[str, Any]) -> None:
    """`json_schema_extra` for an optional picker: an empty default is no block to show."""
    schema.pop("default", None)
