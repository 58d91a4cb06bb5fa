"""The ``draem-zoo`` command line: argument parsing (:mod:`.parser`), the command bodies
(:mod:`.commands`), the quickstart and the overlay pictures. It calls every stage above it and
hands the user one JSON object or table per command, and one line per error (exit code 2)."""

from .parser import build_parser, main

__all__ = ["build_parser", "main"]
