"""Names → block references for deployment runs, against a real Prefect server: the server
refuses a plain name where the form has a block picker, and takes what as_form_parameters
makes of it."""

from __future__ import annotations

import asyncio
import contextlib

import pytest


async def _deployment():
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    from hybridgrid.flows.add_remote_site import add_remote_site

    async with get_client() as client:
        with contextlib.suppress(ObjectAlreadyExists):
            await client.create_work_pool(WorkPoolCreate(name="forms-test", type="process"))
    dep = await add_remote_site.to_deployment(name="forms-test", work_pool_name="forms-test")
    return await dep.apply()


def test_names_become_block_references_the_server_accepts(prefect_harness):
    from prefect.client.orchestration import get_client
    from prefect.exceptions import PrefectHTTPStatusError

    from hybridgrid.blocks.openstack import OpenStackCredentials
    from hybridgrid.blocks.ssh import SSHKey
    from hybridgrid.deployments.forms import UnknownBlock, as_form_parameters

    async def main():
        dep_id = await _deployment()
        await OpenStackCredentials(auth_url="http://k:5000/v3", username="u", password="p").asave(
            "forms-cloud", overwrite=True
        )
        await SSHKey.generate().asave("forms-key", overwrite=True)
        params = {
            "site": {"name": "hd", "cloud": "forms-cloud", "workers": 0},
            "options": {"ssh_key_block": "forms-key", "verify": False},
        }
        async with get_client() as client:
            with pytest.raises(PrefectHTTPStatusError, match="is not valid under any"):
                await client.create_flow_run_from_deployment(dep_id, parameters=params)
            dep = await client.read_deployment(dep_id)
            form = await as_form_parameters(client, dep.parameter_openapi_schema, params)
            cloud = await client.read_block_document_by_name(
                "forms-cloud", "hybridgrid-openstack-credentials"
            )
            assert form["site"] == {
                "name": "hd",
                "cloud": {"$ref": {"block_document_id": str(cloud.id)}},
                "workers": 0,
            }
            assert form["options"]["ssh_key_block"]["$ref"]["block_document_id"]
            assert form["options"]["verify"] is False
            run = await client.create_flow_run_from_deployment(dep_id, parameters=form)
            assert run.parameters == form
            await client.delete_flow_run(run.id)
            with pytest.raises(UnknownBlock, match=r"site.cloud: .*'nosuch'.*cloud import nosuch"):
                await as_form_parameters(
                    client, dep.parameter_openapi_schema, {"site": {"name": "x", "cloud": "nosuch"}}
                )

    asyncio.run(main())
