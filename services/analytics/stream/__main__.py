"""Runs the stream processor worker: `python -m services.analytics.stream`."""

from __future__ import annotations

import faust

from services.analytics.stream.app import create_app
from services.common.logs import configure_logging
from services.common.settings import get_settings


def main() -> None:
    settings = get_settings()
    app, services = create_app(settings)
    worker = faust.Worker(app, *services, loglevel=settings.log_level, quiet=True, redirect_stdouts=False)
    configure_logging(settings.log_level, settings.log_json, service="worker")
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
