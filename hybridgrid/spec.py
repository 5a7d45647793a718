"""Read a YAML topology spec into the model, turning every failure into one TopologyError."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from hybridgrid.model import Topology, TopologyError, topology_error

EXAMPLE = "examples/seed.yaml"


def parse_spec(text: str, source: str = "spec") -> Topology:
    """Parse YAML text; errors name the field (or the line) and the fix."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = getattr(exc, "problem", None) or "cannot be parsed"
        raise TopologyError(
            where, f"not valid YAML ({problem})", "correct the YAML syntax at that position"
        ) from None
    if not isinstance(data, dict):
        raise TopologyError(
            source,
            "the spec must be a mapping with keys wireguard, home, site_pool, sites",
            f"start from {EXAMPLE}",
        )
    try:
        return Topology.model_validate(data)
    except ValidationError as exc:
        raise topology_error(exc) from None


def load_spec(path: str | Path) -> Topology:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TopologyError(
            "SPEC", f"{path} does not exist", f"give the path of a topology spec, e.g. {EXAMPLE}"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TopologyError(
            "SPEC",
            f"{path} cannot be read ({exc.__class__.__name__})",
            "give a readable UTF-8 file",
        ) from None
    return parse_spec(text, source=str(path))
