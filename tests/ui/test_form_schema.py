"""The parameter schema the Prefect UI renders its run forms from (no server, no browser):
clouds and SSH keys are block pickers (a `$ref` to the block type's definition, which carries
its `block_type_slug`), the home's name is an optional text box (its validator fills it), and
no description holds `<…>`, which the UI would swallow as HTML."""

from __future__ import annotations

import json
from typing import Any

import pytest
from prefect.utilities.callables import parameter_schema

from hybridgrid.deployments.catalog import all_deployments
from hybridgrid.flows.add_remote_site import add_remote_site
from hybridgrid.flows.bootstrap_home import bootstrap_home


def _schema(flow: Any) -> dict[str, Any]:
    return parameter_schema(flow.fn).model_dump()


@pytest.mark.parametrize(
    ("flow", "model", "field", "slug", "required"),
    [
        (add_remote_site, "SiteForm", "cloud", "hybridgrid-openstack-credentials", ["name"]),
        (add_remote_site, "AddSiteOptions", "ssh_key_block", "hybridgrid-ssh-key", []),
        (bootstrap_home, "HomeForm", "cloud", "hybridgrid-openstack-credentials", None),
        (bootstrap_home, "HomeOptions", "ssh_key_block", "hybridgrid-ssh-key", []),
    ],
)
def test_clouds_and_keys_are_block_pickers(flow, model, field, slug, required) -> None:
    schema = _schema(flow)
    definition = schema["definitions"][model]
    prop = definition["properties"][field]
    ref = prop.get("$ref") or next(x["$ref"] for x in prop["anyOf"] if "$ref" in x)
    target = schema["definitions"][ref.removeprefix("#/definitions/")]
    assert target["block_type_slug"] == slug
    assert "default" not in prop or prop["default"] is None, prop  # no "" block to show
    if required is not None:
        assert definition.get("required", []) == required


def test_the_home_name_is_an_optional_plain_string() -> None:
    definition = _schema(bootstrap_home)["definitions"]["HomeForm"]
    assert definition["required"] == ["cloud", "master", "subnet"]
    prop = definition["properties"]["name"]
    # `anyOf [string, null]` would render as a string/None toggle; a plain string is a text box
    assert prop["type"] == "string" and "anyOf" not in prop, prop
    assert prop["default"] == "" and "empty =" in prop["description"], prop


def test_the_site_name_has_its_rule_in_the_schema() -> None:
    name = _schema(add_remote_site)["definitions"]["SiteForm"]["properties"]["name"]
    assert name["pattern"] == "^[a-z]([a-z0-9-]*[a-z0-9])?$" and name["maxLength"] == 20


@pytest.mark.parametrize("deployment", all_deployments(), ids=lambda d: d.name)
def test_no_description_holds_html_like_text(deployment) -> None:
    import re

    texts = re.findall(r'"description": "([^"]*)"', json.dumps(_schema(deployment.load_flow())))
    assert not [t for t in texts if re.search(r"<[a-z]", t)], texts


def test_a_picked_block_becomes_its_name() -> None:
    """What the UI sends ({"$ref": {"block_document_id": …}}) reaches the flow as a loaded
    block; the form model keeps its name, and plain names pass as they are."""
    from hybridgrid.blocks.pickers import block_name
    from hybridgrid.flows.add_remote_site import SiteForm

    class Loaded:
        _block_document_name = "heidelberg"
        _block_document_id = "x"

    assert block_name(Loaded()) == "heidelberg"
    site = SiteForm.model_validate({"name": "hd", "cloud": Loaded()})
    assert site.cloud == "heidelberg"
    assert SiteForm.model_validate({"name": "hd"}).cloud == "hd"

    class Unsaved:
        _block_document_name = None
        _block_document_id = None

    with pytest.raises(ValueError, match="saved block"):
        SiteForm.model_validate({"name": "hd", "cloud": Unsaved()})
