"""``python -m skytap_simulator``: run the simulator with uvicorn (options: docs/simulator.md)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import uvicorn

from .app import create_app
from .faults import FaultSettings
from .simulator import Simulator

log = logging.getLogger("skytap_simulator")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="python -m skytap_simulator", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765, help="0 binds a free port")
    p.add_argument("--seed", type=Path, help="seed JSON file (default: built-in seed)")
    p.add_argument("--state-file", type=Path, help="save state here after each change")
    p.add_argument("--data-dir", type=Path, help="where copied disk images go (default: temp)")
    p.add_argument("--time-scale", type=float, help="multiply every simulated duration")
    p.add_argument("--faults", help="fault settings as JSON, or @FILE")
    p.add_argument("--port-file", type=Path, help="write the bound port here once listening")
    return p.parse_args(argv)


def read_json_arg(value: str) -> Any:
    """JSON text, or ``@path`` to a JSON file."""
    if value.startswith("@"):
        return json.loads(Path(value[1:]).read_text(encoding="utf-8"))
    return json.loads(value)


def write_port_file(path: Path, port: int) -> None:
    """Write the port atomically so a reader never sees a half-written file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    with os.fdopen(fd, "w") as fh:
        fh.write(f"{port}\n")
    os.replace(tmp, path)


class _Server(uvicorn.Server):
    """Reports the bound port once uvicorn is listening."""

    def __init__(self, config: uvicorn.Config, port_file: Path | None) -> None:
        super().__init__(config)
        self.port_file = port_file

    async def startup(self, sockets: list[Any] | None = None) -> None:
        await super().startup(sockets)
        if not self.started:
            return
        port = self.servers[0].sockets[0].getsockname()[1]
        log.info("skytap simulator listening on http://%s:%d", self.config.host, port)
        if self.port_file is not None:
            write_port_file(self.port_file, port)


def build_simulator(args: argparse.Namespace) -> Simulator:
    """A Simulator from the command-line options."""
    seed = json.loads(args.seed.read_text(encoding="utf-8")) if args.seed else None
    overrides = {"time_scale": args.time_scale} if args.time_scale is not None else {}
    faults = FaultSettings.model_validate(read_json_arg(args.faults)) if args.faults else None
    return Simulator(
        seed=seed,
        data_dir=args.data_dir,
        state_file=args.state_file,
        config_overrides=overrides,
        faults=faults,
    )


def main(argv: list[str] | None = None) -> None:
    """Entry point."""
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(message)s")
    args = parse_args(argv)
    sim = build_simulator(args)
    config = uvicorn.Config(
        create_app(sim),
        host=args.host,
        port=args.port,
        http="h11",
        loop="asyncio",
        lifespan="off",
        access_log=False,
        log_level="warning",
        log_config=None,
        timeout_graceful_shutdown=2,
    )
    _Server(config, args.port_file).run()


if __name__ == "__main__":
    main()
