"""Serving: zoo models where the images are (the stage above ``hub``; with ``search``, the only one that
imports Ray). :mod:`.records` (one record per image, decoding) -> :mod:`.sink` (JSON lines, Parquet, resume)
-> :mod:`.local` (``predict`` on one machine, a DataLoader pool) and :mod:`.batch` (``predict`` on Ray Data)
-> :mod:`.models` (specs, names, what ``/models`` says) -> :mod:`.service` (Ray Serve HTTP API) with
:mod:`.page` (the page ``GET /`` serves) and :mod:`.pictures` (overlay PNGs). Only ``batch`` and
``service`` import Ray, so ``predict`` on one machine never starts it."""
