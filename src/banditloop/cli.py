"""The ``banditloop`` command: a thin layer over the library."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import httpx
from pydantic import ValidationError

from .admin_client import Admin, open_admin
from .config import Settings, describe
from .errors import BanditloopError
from .store.lock import DataDirLock
from .worlds import WORLDS


@click.group()
@click.version_option(package_name="banditloop")
def main() -> None:
    """banditloop: personalization with Vowpal Wabbit, on Azure Personalizer's API."""


@main.command()
@click.option("--host", default=None, help="Address to listen on (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port to listen on (default 8080).")
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Directory of the SQLite store (default ./data).",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="TOML configuration file (see configs/banditloop.toml).",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
def serve(
    host: str | None,
    port: int | None,
    data_dir: Path | None,
    config_file: Path | None,
    log_level: str,
) -> None:
    """Run the service.

    Example: banditloop serve --port 8080 --data-dir ./data
    """
    import uvicorn

    from .app import create_app

    settings = Settings.load(config_file, host=host, port=port, data_dir=data_dir)
    try:  # fail with one clear line if another process owns the data directory
        DataDirLock(settings.data_dir).acquire().release()
    except BanditloopError as ex:
        raise click.ClickException(ex.message) from None
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        access_log=False,
    )


@main.command()
@click.option(
    "--url",
    default="http://127.0.0.1:8080",
    show_default=True,
    help="Base URL of a running banditloop server.",
)
@click.option("--events", default=5000, show_default=True, help="Number of Rank calls.")
@click.option("--seed", default=0, show_default=True, help="Seed of the world's randomness.")
@click.option("--api-key", default=None, help="Key to send, if the server requires one.")
@click.option(
    "--world",
    default="news",
    show_default=True,
    type=click.Choice(list(WORLDS)),
    help="Simulated world to play (see docs/learning.md).",
)
def simulate(url: str, events: int, seed: int, api_key: str | None, world: str) -> None:
    """Play a simulated world against a running server and print the reward rate (CTR).

    Example: banditloop simulate --url http://127.0.0.1:8080 --events 5000 --world news
    """
    from .simulate import run_http

    try:
        result = run_http(
            url, events=events, seed=seed, api_key=api_key, echo=click.echo, world=world
        )
    except httpx.HTTPError as ex:
        raise click.ClickException(f"talking to {url}: {ex}") from None
    except RuntimeError as ex:  # a world whose optional dependency is missing
        raise click.ClickException(str(ex)) from None
    click.echo(
        f"done: {result.events} events in {result.seconds:.1f}s, ctr {result.ctr:.3f}, "
        f"last-window ctr {result.last_window_ctr:.3f}"
    )


# -- administration: against a running server (--url) or a data directory ----------


def _target(f: Callable[..., Any]) -> Callable[..., Any]:
    """The options every admin command shares."""
    f = click.option("--loop", default="default", show_default=True, help="Loop name.")(f)
    f = click.option(
        "--api-key",
        envvar="BANDITLOOP_API_KEY",
        default=None,
        help="Admin key for --url (or env BANDITLOOP_API_KEY).",
    )(f)
    f = click.option(
        "--config",
        "config_file",
        type=click.Path(exists=True, path_type=Path),
        default=None,
        help="TOML configuration file, with --data-dir.",
    )(f)
    f = click.option(
        "--data-dir",
        type=click.Path(path_type=Path),
        default=None,
        help="Work on this data directory directly (no server may be using it).",
    )(f)
    f = click.option(
        "--url", default=None, help="Base URL of a running server, e.g. http://127.0.0.1:8080."
    )(f)
    return f


@contextmanager
def _admin(
    url: str | None, data_dir: Path | None, loop: str, api_key: str | None, config_file: Path | None
) -> Iterator[Admin]:
    if not url and not data_dir:
        raise click.UsageError("Give --url (a running server) or --data-dir (offline).")
    try:
        with open_admin(url, data_dir, loop, api_key, config_file) as admin:
            yield admin
    except BanditloopError as ex:
        raise click.ClickException(ex.message) from None
    except httpx.HTTPError as ex:
        raise click.ClickException(f"talking to {url}: {ex}") from None
    except ValidationError as ex:
        raise click.ClickException(describe(ex)) from None


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2))


@main.group()
def config() -> None:
    """Show or change a loop's service configuration and policy."""


@config.command("show")
@_target
def config_show(**target: Any) -> None:
    """Print the service configuration and the policy.

    Example: banditloop config show --url http://127.0.0.1:8080
    """
    with _admin(**target) as admin:
        _echo_json({"service": admin.get_config(), "policy": admin.get_policy()})


@config.command("set")
@_target
@click.option(
    "--policy", "policy_args", default=None, help="New policy arguments (starts a new model)."
)
@click.argument("assignments", nargs=-1)
def config_set(assignments: tuple[str, ...], policy_args: str | None, **target: Any) -> None:
    """Change configuration fields, given as field=value (values as JSON or text).

    Example: banditloop config set --data-dir ./data rewardWaitTime=PT1M explorationPercentage=0.1
    """
    changes: dict[str, Any] = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise click.UsageError(f"expected field=value, got {item!r}")
        try:
            changes[key] = json.loads(raw)
        except json.JSONDecodeError:
            changes[key] = raw
    with _admin(**target) as admin:
        if changes:
            _echo_json(admin.put_config({**admin.get_config(), **changes}))
        if policy_args is not None:
            _echo_json(admin.put_policy(target["loop"], policy_args))


@main.group()
def model() -> None:
    """Export, import or reset a loop's model."""


@model.command("export")
@_target
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--signed", is_flag=True, help="A zip with a digest, as GET /model?signed=true.")
def model_export(output: Path, signed: bool, **target: Any) -> None:
    """Write the model file (loadable with vowpalwabbit's -i).

    Example: banditloop model export --url http://127.0.0.1:8080 -o model.vw
    """
    with _admin(**target) as admin:
        blob = admin.export_model(signed)
    output.write_bytes(blob)
    click.echo(f"wrote {len(blob)} bytes to {output}")


@model.command("import")
@_target
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def model_import(file: Path, **target: Any) -> None:
    """Replace the model with a VW model file (or a signed zip).

    Example: banditloop model import --data-dir ./data model.vw
    """
    with _admin(**target) as admin:
        admin.import_model(file.read_bytes())
    click.echo(f"imported {file}")


@model.command("reset")
@_target
def model_reset(**target: Any) -> None:
    """Start over with an empty model.

    Example: banditloop model reset --url http://127.0.0.1:8080 --loop news
    """
    with _admin(**target) as admin:
        admin.reset_model()
    click.echo("model reset")


@main.group()
def logs() -> None:
    """Inspect or delete a loop's logged events."""


@logs.command("info")
@_target
def logs_info(**target: Any) -> None:
    """Print the date range of the logged events.

    Example: banditloop logs info --data-dir ./data
    """
    with _admin(**target) as admin:
        _echo_json(admin.logs_info())


@logs.command("delete")
@_target
@click.option("--event-id", default=None, help="Delete only this event.")
@click.option(
    "--feature",
    default=None,
    help="Delete events whose context has this feature (a path such as user.id) ...",
)
@click.option("--value", default=None, help="... equal to this value (JSON or text).")
@click.option("--yes", is_flag=True, help="Do not ask before deleting everything.")
def logs_delete(
    event_id: str | None, feature: str | None, value: str | None, yes: bool, **target: Any
) -> None:
    """Delete logged events: all, one event, or those of a user (a context feature value).

    Example: banditloop logs delete --url http://127.0.0.1:8080 --feature user.id --value u42
    """
    if feature and value is None:
        raise click.UsageError("--feature needs --value")
    if not event_id and not feature and not yes:
        click.confirm("Delete every logged event of the loop?", abort=True)
    parsed: Any = value
    if value is not None:
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
    with _admin(**target) as admin:
        n = admin.delete_logs(event_id, feature, parsed)
    click.echo("deleted all events" if n is None else f"deleted {n} events")


@main.group()
def loops() -> None:
    """List, create or delete the loops of a server."""


@loops.command("list")
@_target
def loops_list(**target: Any) -> None:
    """List the loops.

    Example: banditloop loops list --url http://127.0.0.1:8080
    """
    with _admin(**target) as admin:
        _echo_json(admin.list_loops())


@loops.command("create")
@_target
@click.argument("name")
@click.option("--policy", "policy_args", default=None, help="Policy arguments of the loop.")
@click.option("--client-key", "client_keys", multiple=True, help="A client key of the loop.")
@click.option("--admin-key", "admin_keys", multiple=True, help="An admin key of the loop.")
def loops_create(
    name: str,
    policy_args: str | None,
    client_keys: tuple[str, ...],
    admin_keys: tuple[str, ...],
    **target: Any,
) -> None:
    """Create a loop, served at /loops/NAME/personalizer/...

    Example: banditloop loops create --url http://127.0.0.1:8080 news
    """
    spec = {"policy": policy_args, "clientKeys": list(client_keys), "adminKeys": list(admin_keys)}
    with _admin(**target) as admin:
        loop, created = admin.create_loop(name, spec)
    click.echo(("created " if created else "exists: ") + json.dumps(loop))


@loops.command("delete")
@_target
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask.")
def loops_delete(name: str, yes: bool, **target: Any) -> None:
    """Delete a loop with its model and logs.

    Example: banditloop loops delete --url http://127.0.0.1:8080 news --yes
    """
    if not yes:
        click.confirm(f"Delete loop {name} with its model and logs?", abort=True)
    with _admin(**target) as admin:
        admin.delete_loop(name)
    click.echo(f"deleted loop {name}")
