"""Flow-run parameters as the UI's run form sends them.

The deployments' schemas make clouds and SSH keys block pickers (hybridgrid.blocks.pickers),
so the Prefect server accepts, for those fields, only a block reference
``{"$ref": {"block_document_id": …}}``, as the form sends it. Callers that know blocks by name
(the CLI, tests, benchmarks) pass their parameters through `as_form_parameters` first: every
string at a picker's place becomes the reference of the block of that name and type.
"""

from __future__ import annotations

from typing import Any

from prefect.exceptions import ObjectNotFound


class UnknownBlock(ValueError):
    """A parameter names a block that does not exist (the message names field and fix)."""


async def as_form_parameters(
    client: Any, schema: dict[str, Any], parameters: dict[str, Any]
) -> dict[str, Any]:
    """`parameters` with block names replaced by block references where `schema` (a
    deployment's ``parameter_openapi_schema``) has a block picker."""
    defs = schema.get("definitions", {})
    props = schema.get("properties", {})
    out = {}
    for key, value in parameters.items():
        out[key] = await _convert(client, defs, props.get(key, {}), value, key)
    return out


def _targets(defs: dict[str, Any], prop: dict[str, Any]) -> list[dict[str, Any]]:
    """The definitions a property points at: its `$ref`, or those among anyOf/allOf/oneOf."""
    refs = [prop.get("$ref")] + [
        x.get("$ref") for k in ("anyOf", "allOf", "oneOf") for x in prop.get(k, [])
    ]
    return [defs[r.removeprefix("#/definitions/")] for r in refs if r and r.startswith("#/defin")]


async def _convert(client: Any, defs: dict, prop: dict, value: Any, path: str) -> Any:
    for target in _targets(defs, prop):
        slug = target.get("block_type_slug")
        if slug and isinstance(value, str) and value:
            return {"$ref": {"block_document_id": await _block_id(client, slug, value, path)}}
        if isinstance(value, dict) and "properties" in target and "$ref" not in value:
            fields = target["properties"]
            return {
                k: await _convert(client, defs, fields.get(k, {}), v, f"{path}.{k}")
                for k, v in value.items()
            }
    return value


async def _block_id(client: Any, slug: str, name: str, path: str) -> str:
    try:
        doc = await client.read_block_document_by_name(name, slug)
    except ObjectNotFound:
        fix = (
            f"hybridgrid cloud import {name}"
            if slug == "hybridgrid-openstack-credentials"
            else "create it, or leave the field empty"
        )
        raise UnknownBlock(f"{path}: there is no {slug} block named {name!r}; fix: {fix}") from None
    return str(doc.id)
