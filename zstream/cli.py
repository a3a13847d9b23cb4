"""The `zstream` command line.

Bad input ends with a message naming what is wrong and a distinct exit status, never a
traceback: 2 for an invalid topology, 1 when this machine cannot run it.
"""

from __future__ import annotations

import logging
import os
import sys

import click

from zstream import __version__
from zstream.errors import PreflightError, TopologyError
from zstream.topology import Topology, load_topology
from zstream.worker import configure_logging

EXIT_ENVIRONMENT = 1
EXIT_INVALID = 2


def _load(path: str) -> Topology:
    try:
        return load_topology(path)
    except TopologyError as exc:
        count = len(exc.problems)
        click.echo(f"{path}: {count} problem{'s' if count != 1 else ''}:", err=True)
        for problem in exc.problems:
            click.echo(f"  {problem}", err=True)
        sys.exit(EXIT_INVALID)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="zstream")
def main() -> None:
    """Ingest traffic-camera video into Redis Streams through a ZeroMQ multiprocess pipeline."""


@main.command()
@click.argument("topology_file", type=click.Path(dir_okay=False, path_type=str))
def validate(topology_file: str) -> None:
    """Check TOPOLOGY_FILE and print OK or every problem with its key path (exit 2)."""
    from zstream.preflight import shared_memory_needed

    topology = _load(topology_file)
    click.echo(
        f"OK: {len(topology.cameras)} cameras, {topology.capture.workers} capture / "
        f"{topology.validation.workers} validation workers, rings need "
        f"{shared_memory_needed(topology) / 2**20:.1f} MiB of shared memory"
    )


@main.command()
@click.argument("topology_file", type=click.Path(dir_okay=False, path_type=str), default="topology.toml")
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
def up(topology_file: str, log_level: str) -> None:
    """Run the pipeline described by TOPOLOGY_FILE until Ctrl-C (which drains it first)."""
    from zstream.supervisor import Supervisor

    topology = _load(topology_file)
    os.environ["ZSTREAM_LOG_LEVEL"] = log_level.upper()  # inherited by every worker
    configure_logging("supervisor", log_level.upper())
    try:
        code = Supervisor(topology).run()
    except PreflightError as exc:
        logging.getLogger("zstream").error("cannot start: %s", exc)
        sys.exit(EXIT_ENVIRONMENT)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(code)


if __name__ == "__main__":
    main()
