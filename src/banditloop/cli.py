"""The ``banditloop`` command: a thin layer over the library."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from .config import Settings


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
def simulate(url: str, events: int, seed: int, api_key: str | None) -> None:
    """Play the news-personalization world against a running server and print the CTR.

    Example: banditloop simulate --url http://127.0.0.1:8080 --events 5000
    """
    import httpx

    from .simulate import run_http

    try:
        result = run_http(url, events=events, seed=seed, api_key=api_key, echo=click.echo)
    except httpx.HTTPError as ex:
        raise click.ClickException(f"talking to {url}: {ex}") from None
    click.echo(
        f"done: {result.events} events in {result.seconds:.1f}s, ctr {result.ctr:.3f}, "
        f"last-window ctr {result.last_window_ctr:.3f}"
    )
