"""The ``banditloop`` command: a thin layer over the library."""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import httpx
from pydantic import ValidationError

from . import dsjson
from .admin_client import Admin, LocalAdmin, open_admin
from .config import Settings, describe
from .dsjson import parse_timestamp
from .errors import BadRequest, BanditloopError
from .evaluation import report
from .evaluation.importance import feature_importance
from .evaluation.jobs import run_evaluation
from .service import own_data_dir
from .store.base import LoopRecord
from .store.sqlite import read_events, read_loop
from .worlds import WORLDS


@click.group()
@click.version_option(package_name="banditloop")
def main() -> None:
    """banditloop: personalization with Vowpal Wabbit, on Azure Personalizer's API."""


@main.command()
@click.option("--host", default=None, help="Address to listen on (default 127.0.0.1).")
@click.option(
    "--port", type=int, default=None, help="Port to listen on (default 8080; 0: any free one)."
)
@click.option(
    "--port-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the port listened on to this file once bound (with --port 0).",
)
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
@click.option(
    "--workers",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Rank processes; with 1 or more, a separate trainer process learns "
    "(0: one process does both).",
)
@click.option(
    "--store",
    default=None,
    help="PostgreSQL URL (postgresql://user@host/db) shared by several servers; "
    "default: SQLite in --data-dir. Also BANDITLOOP_STORE.",
)
@click.option(
    "--trainer/--no-trainer",
    default=None,
    help="Whether this server may train (default yes); rank-only nodes use --no-trainer.",
)
def serve(
    host: str | None,
    port: int | None,
    port_file: Path | None,
    data_dir: Path | None,
    config_file: Path | None,
    log_level: str,
    workers: int,
    store: str | None,
    trainer: bool | None,
) -> None:
    """Run the service.

    Example: banditloop serve --port 8080 --data-dir ./data --workers 2
    """
    import uvicorn

    from .app import create_app
    from .processes import bind, write_port_file

    settings = Settings.load(
        config_file, host=host, port=port, data_dir=data_dir, store=store, trainer=trainer
    )
    try:  # fail with one clear line if another process owns the data directory
        lock = own_data_dir(settings)
        if lock is not None:
            lock.release()
    except BanditloopError as ex:
        raise click.ClickException(ex.message) from None
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if workers:
        from .processes import serve_workers

        try:
            serve_workers(settings, workers, log_level, port_file)
        except BanditloopError as ex:  # the port is taken
            raise click.ClickException(ex.message) from None
        return
    try:  # bound here, so that port 0 is known before anyone asks
        sock = bind(settings.host, settings.port, reuse_port=False)
    except OSError as ex:
        raise click.ClickException(
            f"Cannot listen on {settings.host}:{settings.port}: {ex}."
        ) from None
    with sock:
        sock.listen(2048)  # connections wait in the backlog until uvicorn accepts them
        if port_file is not None:
            write_port_file(port_file, sock.getsockname()[1])
        config = uvicorn.Config(create_app(settings), log_level=log_level, access_log=False)
        server = uvicorn.Server(config)
        server.run(sockets=[sock])
    if not server.started:  # the application did not start (as uvicorn.run exits)
        sys.exit(3)


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
    except BanditloopError as ex:  # a server's error names its code
        raise click.ClickException(f"{ex.message} ({ex.code})" if url else ex.message) from None
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
    if event_id is None and not feature and not yes:
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


_file_format = click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "jsonl"]),
    default=None,
    help="File format (default: csv for *.csv, else JSON lines).",
)


@main.group()
def items() -> None:
    """Manage a loop's item catalogue (features of the items it ranks)."""


@items.command("import")
@_target
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_file_format
@click.option(
    "--batch", default=1000, show_default=True, type=click.IntRange(min=1), help="Items per call."
)
def items_import(file: Path, fmt: str | None, batch: int, **target: Any) -> None:
    """Insert or replace catalogue items from CSV (an id column, other columns are
    features) or JSON lines ({"id", "features", "available"?} per line).

    Example: banditloop items import --url http://127.0.0.1:8080 --loop shop items.csv
    """
    from .items import read_items
    from .store.base import Item

    fmt = fmt or ("csv" if file.suffix.lower() == ".csv" else "jsonl")
    n = 0
    with _admin(**target) as admin, file.open(newline="", encoding="utf-8") as fh:
        chunk: list[Item] = []
        for item in read_items(fh, fmt):
            chunk.append(item)
            if len(chunk) >= batch:
                n += admin.put_items(chunk)
                chunk = []
        if chunk:
            n += admin.put_items(chunk)
    click.echo(f"imported {n} items from {file}")


@main.group()
def scenarios() -> None:
    """Manage a loop's recommendation scenarios (docs/recommendations.md)."""


@scenarios.command("list")
@_target
def scenarios_list(**target: Any) -> None:
    """Print every scenario of the loop.

    Example: banditloop scenarios list --url http://127.0.0.1:8080 --loop shop
    """
    with _admin(**target) as admin:
        _echo_json(admin.list_scenarios())


@scenarios.command("put")
@_target
@click.argument("name")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def scenarios_put(name: str, file: Path, **target: Any) -> None:
    """Create or replace a scenario from a JSON file.

    Example: banditloop scenarios put --url http://127.0.0.1:8080 --loop shop home home.json
    """
    try:
        spec = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as ex:
        raise click.ClickException(f"{file}: not JSON: {ex}") from None
    with _admin(**target) as admin:
        _echo_json(admin.put_scenario(name, spec))


@scenarios.command("delete")
@_target
@click.argument("name")
def scenarios_delete(name: str, **target: Any) -> None:
    """Remove a scenario.

    Example: banditloop scenarios delete --url http://127.0.0.1:8080 --loop shop home
    """
    with _admin(**target) as admin:
        admin.delete_scenario(name)
    click.echo(f"deleted scenario {name}")


@main.group()
def events() -> None:
    """Track user events for the built-in recommendation models."""


def _event_rows(fh: Any, fmt: str) -> Iterator[dict[str, Any]]:
    """Events from CSV (columns type, itemId, userId, sessionId, timestamp, value,
    eventId; empty cells left out) or JSON lines (one event object per line)."""
    if fmt == "jsonl":
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    raise click.ClickException(f"line {n}: not a JSON object") from None
        return
    for row in csv.DictReader(fh):
        event: dict[str, Any] = {k: v for k, v in row.items() if k and v}
        for key in ("timestamp", "value"):
            if key in event:
                # an ISO-8601 timestamp stays text; a bad value is named by the server
                with contextlib.suppress(ValueError):
                    event[key] = float(event[key])
        yield event


@events.command("import")
@_target
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_file_format
def events_import(file: Path, fmt: str | None, **target: Any) -> None:
    """Track past events (e.g. an order history) so that the models start with them.

    Example: banditloop events import --url http://127.0.0.1:8080 --loop shop orders.csv
    """
    fmt = fmt or ("csv" if file.suffix.lower() == ".csv" else "jsonl")
    n = 0
    with _admin(**target) as admin, file.open(newline="", encoding="utf-8") as fh:
        batch: list[dict[str, Any]] = []
        for event in _event_rows(fh, fmt):
            batch.append(event)
            if len(batch) >= 1000:
                n += admin.track(batch)["accepted"]
                batch = []
        if batch:
            n += admin.track(batch)["accepted"]
    click.echo(f"imported {n} events from {file}")


# -- logs out and in, and offline evaluation -------------------------------------------


def _time(value: str | None, default: float) -> float:
    if not value:
        return default
    if value == "now":
        return time.time()
    try:
        return parse_timestamp(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO-8601 time") from None


def _store_file(data_dir: Path, loop: str) -> tuple[Path, LoopRecord]:
    db = data_dir / "banditloop.db"
    record = read_loop(db, loop) if db.exists() else None
    if record is None:
        raise click.ClickException(f"no loop {loop!r} in {data_dir}")
    return db, record


_range = [
    click.option("--from", "start", default=None, help="Start (ISO-8601); default: the beginning."),
    click.option("--to", "end", default=None, help="End (ISO-8601 or 'now'); default: now."),
]


def _with_range(f: Callable[..., Any]) -> Callable[..., Any]:
    for opt in reversed(_range):
        f = opt(f)
    return f


@logs.command("export")
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Read this data directory (a running server may keep using it).",
)
@click.option("--url", default=None, help="Or export from a running server.")
@click.option("--api-key", envvar="BANDITLOOP_API_KEY", default=None, help="Admin key for --url.")
@click.option("--loop", default="default", show_default=True)
@_with_range
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
def logs_export(
    data_dir: Path | None,
    url: str | None,
    api_key: str | None,
    loop: str,
    start: str | None,
    end: str | None,
    output: Path,
) -> None:
    """Write the joined decisions of a time range as DSJSON (one JSON object per line).

    Example: banditloop logs export --data-dir ./data --from 2026-11-01T00:00:00Z -o logs.json
    """
    t0, t1 = _time(start, 0.0), _time(end, time.time())
    n = 0
    with output.open("wb") as out:
        if url:
            from .client import Client

            span = (dt.datetime.fromtimestamp(t, dt.UTC) for t in (t0, t1))
            try:
                with Client(url, key=api_key, loop=loop) as bl:
                    for line in bl.lines(bl.export_log_lines(*span)):
                        out.write(line + b"\n")
                        n += 1
                        _tick(n)
            except BanditloopError as ex:
                raise click.ClickException(f"{ex.message} ({ex.code})") from None
            except httpx.HTTPError as ex:
                raise click.ClickException(f"talking to {url}: {ex}") from None
        else:
            if data_dir is None:
                raise click.UsageError("Give --data-dir or --url.")
            db, _ = _store_file(data_dir, loop)
            for ev in read_events(db, loop, t0, t1):
                out.write(dsjson.dumps(dsjson.line(ev)))
                n += 1
                _tick(n)
    click.echo(f"\nwrote {n} events to {output}", err=True)


def _tick(n: int) -> None:
    if n % 10_000 == 0 and sys.stderr.isatty():
        click.echo(f"\r{n} events ...", nl=False, err=True)


@logs.command("import")
@_target
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--no-learn", is_flag=True, help="Keep the events for evaluation only.")
def logs_import(paths: tuple[Path, ...], no_learn: bool, **target: Any) -> None:
    """Load DSJSON decisions (e.g. Azure Personalizer's log mirror) into a loop's log.

    PATHS are files or directories, searched recursively for .json and .json.gz files,
    imported in the order of their first timestamps. Each file is checked whole first:
    one with a bad line is not imported (its refused lines are listed), the others are.
    Event IDs logged already are skipped. Imported events are learned by the loop's
    trainer (a warm start) unless --no-learn.
    Example: banditloop logs import --url http://127.0.0.1:8080 ./azure-logs/
    """
    from .logimport import ImportSummary, lines_of, log_files

    files = log_files(paths)
    total = ImportSummary()
    refused: list[tuple[Path, int]] = []  # (file, refused lines)
    learn = not no_learn

    def done(path: Path, summary: ImportSummary) -> None:
        for field in ("lines", "events", "duplicates", "multislot"):
            setattr(total, field, getattr(total, field) + getattr(summary, field))
        click.echo(
            f"{path}: {summary.lines} lines, {summary.events} events, "
            f"{summary.duplicates} duplicates"
            + (f", {summary.multislot} multi-slot lines" if summary.multislot else ""),
            err=True,
        )

    def bad(path: Path, ex: BanditloopError) -> None:
        details = ex.details or [{"target": "", "message": ex.message}]
        for d in details:
            click.echo(f"{path} {d.get('target', '')}: {d['message']}", err=True)
        refused.append((path, len(details)))

    if target["url"]:
        with _importer(target["url"], target["loop"], target["api_key"], learn) as upload:
            for path in files:
                try:
                    done(path, upload(path))
                except BanditloopError as ex:
                    bad(path, ex)
    else:
        with _admin(**target) as admin:
            assert isinstance(admin, LocalAdmin)
            for path in files:
                try:
                    with path.open("rb") as fh:
                        done(path, admin.loop.import_lines(lines_of(fh), learn, _progress(path)))
                except BanditloopError as ex:
                    bad(path, ex)
    click.echo(
        f"imported {total.events} events from {len(files) - len(refused)} of {len(files)} "
        f"files: {total.lines} lines, {total.duplicates} skipped duplicates"
    )
    if total.multislot:
        click.echo(
            f"{total.multislot} multi-slot (CCB) lines were not imported: banditloop imports "
            "single-slot logs (docs/migrating-from-azure.md, 'Multi-slot logs')."
        )
    if refused:
        raise click.ClickException(
            f"{len(refused)} files not imported, refused lines listed above "
            "(file, line number): nothing of those files was stored."
        )


def _progress(path: Path) -> Callable[[Any], None]:
    def show(summary: Any) -> None:
        if sys.stderr.isatty():
            click.echo(
                f"\r{path}: {summary.events + summary.duplicates} events ...", nl=False, err=True
            )

    return show


@contextmanager
def _importer(
    url: str, loop: str, api_key: str | None, learn: bool
) -> Iterator[Callable[[Path], Any]]:
    """Upload files to POST .../logs/import, streamed in chunks: a large file is never
    held in memory, and 1M events cost one request per file, not 1M."""
    from .client import Client
    from .logimport import ImportSummary

    def chunks(path: Path) -> Iterator[bytes]:
        sent = 0
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                sent += len(chunk)
                if sys.stderr.isatty():
                    click.echo(f"\r{path}: {sent >> 20} MiB sent ...", nl=False, err=True)
                yield chunk

    with Client(url, key=api_key, loop=loop) as bl:

        def upload(path: Path) -> ImportSummary:
            try:
                r = bl.send(bl.import_logs(chunks(path), learn))
            except httpx.HTTPError as ex:
                raise click.ClickException(f"talking to {url}: {ex}") from None
            except BadRequest:
                raise  # its refused lines are listed
            except BanditloopError as ex:
                raise click.ClickException(f"{ex.message} ({ex.code})") from None
            return ImportSummary(r.lines, r.events, r.duplicates, r.multiSlotLines)

        yield upload


@main.command()
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="The data directory to read (a running server may keep using it).",
)
@click.option("--loop", default="default", show_default=True)
@_with_range
@click.option(
    "--policy",
    "policies",
    multiple=True,
    help="VW arguments of a policy to compare (repeat, at most 10).",
)
@click.option("--optimize", is_flag=True, help="Also search for better VW arguments.")
@click.option(
    "--report",
    "report_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Write report.md and report.png into this directory.",
)
def evaluate(
    data_dir: Path,
    loop: str,
    start: str | None,
    end: str | None,
    policies: tuple[str, ...],
    optimize: bool,
    report_dir: Path | None,
) -> None:
    """Replay the logs through other policies and estimate what they would have earned.

    Example: banditloop evaluate --data-dir ./data --policy "--cb_explore_adf -q :: --epsilon 0.1"
    """
    db, record = _store_file(data_dir, loop)
    request = {
        "name": "cli",
        "start": _time(start, 0.0),
        "end": _time(end, time.time()),
        "policies": [{"name": f"policy{i + 1}", "arguments": a} for i, a in enumerate(policies)],
        "optimize": optimize,
    }
    try:
        result = run_evaluation(str(db), loop, request, record.policy)
    except BanditloopError as ex:
        raise click.ClickException(ex.message) from None
    result.pop("models", None)
    text = report.table(result)
    click.echo(text)
    for p in result["policies"]:
        if p["arguments"] and p["policySource"] != "Online":
            click.echo(f"  {p['name']}: {p['arguments']}")
    if report_dir:
        report_dir.mkdir(parents=True, exist_ok=True)
        (report_dir / "report.md").write_text(text + "\n")
        try:
            png = report.plot(result, report_dir / "report.png")
        except RuntimeError as ex:
            raise click.ClickException(str(ex)) from None
        click.echo(f"wrote {report_dir / 'report.md'} and {png}")


@main.group()
def features() -> None:
    """Which features matter, measured on the logs."""


@features.command("importance")
@click.option("--data-dir", type=click.Path(path_type=Path, file_okay=False), required=True)
@click.option("--loop", default="default", show_default=True)
@_with_range
def features_importance(data_dir: Path, loop: str, start: str | None, end: str | None) -> None:
    """Score each feature by how much the loop's policy loses without it (drop-one replay).

    Example: banditloop features importance --data-dir ./data
    """
    db, record = _store_file(data_dir, loop)
    scores, diagnostics = feature_importance(
        read_events(db, loop, _time(start, 0.0), _time(end, time.time())), record.policy
    )
    if diagnostics is not None and not diagnostics["estimable"]:
        click.echo(f"no scores: {diagnostics['reason']}")
        return
    click.echo("| namespace | feature | score | distinct values | looks like an ID |")
    click.echo("|---|---|---|---|---|")
    for s in scores:
        click.echo(
            f"| {s['namespace']} | {s['featureName']} | {s['score']:.3f} | "
            f"{s['distinctValues']} | {'yes' if s['highCardinality'] else ''} |"
        )
