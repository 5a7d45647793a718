"""The demo's Prefect profile: one system for every shell after `make demo`.

    python -m hybridgrid.demo_profile activate --api-url URL --previous FILE [--name N]
    python -m hybridgrid.demo_profile deactivate --previous FILE [--name N]

`activate` writes profile N (default hybridgrid-demo: PREFECT_API_URL and PREFECT_UI_URL of
the demo's server) into the user's profiles file — Prefect's own convention, what
`prefect profile create` + `prefect profile use` do — and makes it the active one, so
`hybridgrid sites` in a new shell with nothing exported talks to the demo's server. The
profile that was active before is noted in FILE (once: a second `make demo` keeps the first
note). `deactivate` removes N and makes the noted profile active again.

The profiles file is `--profiles PATH`, else PREFECT_PROFILES_PATH, else
$PREFECT_HOME/profiles.toml, else ~/.prefect/profiles.toml, as Prefect resolves it.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

NAME = "hybridgrid-demo"


def default_profiles_path() -> Path:
    if os.environ.get("PREFECT_PROFILES_PATH"):
        return Path(os.environ["PREFECT_PROFILES_PATH"]).expanduser()
    home = os.environ.get("PREFECT_HOME") or "~/.prefect"
    return Path(home).expanduser() / "profiles.toml"


def _collection(path: Path):
    """Every profile of `path` plus Prefect's defaults (ephemeral, local, …), as Prefect's
    own `prefect profile` commands see them."""
    from prefect.settings import PREFECT_PROFILES_PATH, temporary_settings
    from prefect.settings.profiles import load_profiles

    with temporary_settings(updates={PREFECT_PROFILES_PATH: path}):
        return load_profiles(include_defaults=True)


def _save(path: Path, profiles) -> None:
    from prefect.settings import PREFECT_PROFILES_PATH, temporary_settings
    from prefect.settings.profiles import save_profiles

    with temporary_settings(updates={PREFECT_PROFILES_PATH: path}):
        save_profiles(profiles)
    path.chmod(0o600)


def active(path: Path) -> str | None:
    """The active profile's name in `path` (None when the file names none)."""
    return _collection(path).active_name if path.exists() else None


def activate(api_url: str, previous: Path, path: Path, name: str = NAME) -> str | None:
    """Create/replace profile `name` pointing at `api_url` and make it active; note the
    profile active before in `previous` (unless noted already). Returns that profile."""
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL
    from prefect.settings.profiles import Profile

    profiles = _collection(path)
    before = profiles.active_name if path.exists() else None
    if before != name and not previous.exists():
        previous.parent.mkdir(parents=True, exist_ok=True)
        previous.write_text((before or "") + "\n")
    ui_url = api_url.removesuffix("/").removesuffix("/api")
    if name in profiles.names:
        profiles.remove_profile(name)
    profiles.add_profile(
        Profile(name=name, settings={PREFECT_API_URL: api_url, PREFECT_UI_URL: ui_url})
    )
    profiles.set_active(name)
    _save(path, profiles)
    return before


def deactivate(previous: Path, path: Path, name: str = NAME) -> str | None:
    """Remove profile `name`; make the noted previous profile active again (when it still
    exists), else Prefect's default. Returns the profile now active."""
    if not path.exists():
        previous.unlink(missing_ok=True)
        return None
    profiles = _collection(path)
    noted = previous.read_text().strip() if previous.exists() else ""
    was_active = profiles.active_name == name
    if name in profiles.names:
        if was_active:
            profiles.set_active(None)
        profiles.remove_profile(name)
    if was_active:
        back = noted if noted and noted in profiles.names else None
        profiles.set_active(back, check=False)
    _save(path, profiles)
    previous.unlink(missing_ok=True)
    return profiles.active_name


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m hybridgrid.demo_profile", description=__doc__)
    ap.add_argument("action", choices=["activate", "deactivate"])
    ap.add_argument("--name", default=NAME, help="profile name (default %(default)s)")
    ap.add_argument("--api-url", help="the server's API URL (activate)")
    ap.add_argument("--previous", type=Path, required=True, help="where the previous is noted")
    ap.add_argument("--profiles", type=Path, default=None, help="profiles file")
    args = ap.parse_args(argv)
    path = args.profiles or default_profiles_path()
    if args.action == "activate":
        if not args.api_url:
            ap.error("activate needs --api-url (e.g. http://127.0.0.1:4200/api)")
        before = activate(args.api_url, args.previous, path, args.name)
        print(
            f"Prefect profile {args.name!r} active in {path} (PREFECT_API_URL={args.api_url}; "
            f"before: {before or 'none'})"
        )
    else:
        now = deactivate(args.previous, path, args.name)
        print(f"Prefect profile {args.name!r} removed from {path}; active: {now or 'default'}")


if __name__ == "__main__":
    main()
