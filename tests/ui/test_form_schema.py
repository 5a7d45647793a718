"""The parameter schema the Prefect UI renders its run forms from (no server, no browser):
a site's cloud and the home's name are optional text boxes, since validators fill them."""

from __future__ import annotations

from typing import Any

import pytest
from prefect.utilities.callables import parameter_schema

from hybridgrid.flows.add_remote_site import add_remote_site
from hybridgrid.flows.bootstrap_home import bootstrap_home


def _definition(flow: Any, model: str) -> dict[str, Any]:
    return parameter_schema(flow.fn).model_dump()["definitions"][model]


@pytest.mark.parametrize(
    ("flow", "model", "field", "required"),
    [
        (add_remote_site, "RemoteSite", "cloud", ["name"]),
        (bootstrap_home, "HomeSite", "name", ["cloud", "master", "subnet"]),
    ],
)
def test_defaulted_field_is_an_optional_plain_string(flow, model, field, required) -> None:
    schema = _definition(flow, model)
    assert schema["required"] == required
    prop = schema["properties"][field]
    # `anyOf [string, null]` would render as a string/None toggle; a plain string is a text box
    assert prop["type"] == "string" and "anyOf" not in prop, prop
    assert prop["default"] == "" and "empty =" in prop["description"], prop
