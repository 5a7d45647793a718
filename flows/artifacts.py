"""The site summary of a run, published as Prefect artifacts keyed per site (the markdown and
the resource table are rendered by the core, `hybridgrid.report`)."""

from __future__ import annotations

from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact

from hybridgrid.report import SiteSummary, artifact_key, render_markdown, resource_rows


async def publish(s: SiteSummary) -> None:
    await acreate_markdown_artifact(
        key=artifact_key(s.site, "summary"),
        markdown=render_markdown(s),
        description=f"hybridgrid site {s.site}: topology, keys, verification",
    )
    await acreate_table_artifact(
        key=artifact_key(s.site, "resources"),
        table=resource_rows(s),
        description=f"hybridgrid site {s.site}: resources created / reused / updated",
    )
