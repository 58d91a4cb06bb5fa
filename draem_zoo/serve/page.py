"""The page ``GET /`` serves: one static HTML file with plain JavaScript (no build step): choose a model,
drop an image, see input | anomaly map | overlay side by side with the score and the decision."""

from __future__ import annotations

from functools import cache
from importlib.resources import files


@cache
def page_html() -> str:
    return files("draem_zoo.serve").joinpath("static/index.html").read_text(encoding="utf-8")
