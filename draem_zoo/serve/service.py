"""``draem-zoo serve``: zoo models behind HTTP, on Ray Serve.

One deployment holds every model asked for (a category each) and answers

- ``POST /predict?model=NAME[&pictures=1][&filter_size=N]``: the body is the image file (raw bytes, or a
  ``multipart/form-data`` form with one file); returns the prediction record (score, anomalous, threshold,
  filter_size, anomalous_pixels) and, with ``pictures=1``, the input, anomaly map and overlay as base64 PNGs;
- ``GET /models``: what is loaded, with the card's headline metrics and the weights' sha256;
- ``GET /healthz``; ``GET /``: the page (:mod:`draem_zoo.serve.page`).

Requests are decoded in a thread (in memory: an upload is never written to disk), then batched across clients
with ``@serve.batch`` and predicted under the model's precision. Bad input is a 4xx with one line: 400 not an
image or a bad parameter, 404 an unknown model, 413 a body above ``max_upload_bytes`` or an image above the
pixel limit ``train`` uses. Anything else is a 500 with one line; the traceback goes to the replica's log.
"""

# no `from __future__ import annotations`: FastAPI reads the handlers' annotations at runtime (Request)
import asyncio
import base64
import logging
from email import policy
from email.parser import BytesParser
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from ray import serve
from starlette.exceptions import HTTPException

from ..data.images import ImageTooLarge
from ..errors import DraemZooError
from .models import load_spec, model_info
from .page import page_html
from .records import decode, prediction_records

log = logging.getLogger("draem_zoo.serve")
api = FastAPI(title="draem-zoo", description="DRAEM surface anomaly detection: zoo models over HTTP")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status)


@api.exception_handler(HTTPException)
async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    return _error(exc.status_code, exc.detail)


@api.exception_handler(RequestValidationError)
async def _bad_params(request: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "query")
    return _error(400, f"{where}: {first.get('msg', 'invalid')}")


@api.exception_handler(Exception)
async def _internal(request: Request, exc: Exception) -> JSONResponse:
    log.exception("request to %s failed", request.url.path)
    return _error(500, f"internal error ({type(exc).__name__}); the service's log has the details")


def upload_image(body: bytes, content_type: str) -> tuple[bytes, str]:
    """The image file in a request body: the body itself, or the first file of a multipart form (parsed in
    memory by the standard library's MIME parser)."""
    if not content_type.lower().startswith("multipart/"):
        return body, "upload"
    msg = BytesParser(policy=policy.HTTP).parsebytes(b"Content-Type: " + content_type.encode("latin-1") +
                                                      b"\r\nMIME-Version: 1.0\r\n\r\n" + body)
    for part in msg.iter_parts() if msg.is_multipart() else ():
        if part.get_filename() or part.get_content_maintype() in ("image", "application"):
            return part.get_payload(decode=True) or b"", part.get_filename() or "upload"
    raise HTTPException(400, "the form has no file: send the image as a file field (curl -F file=@image.png) "
                             "or as the raw body (curl --data-binary @image.png)")


@serve.deployment(name="draem", max_ongoing_requests=32)
@serve.ingress(api)
class DraemService:
    """One replica: every model loaded once on its device."""

    def __init__(self, models: dict[str, str], device: str = "auto", max_upload_bytes: int = 64 << 20,
                 max_batch_size: int = 8, batch_wait_s: float = 0.01, threads: int = 1):
        import torch

        torch.set_num_threads(threads)  # Ray gives a replica OMP_NUM_THREADS=1; a CPU replica uses the cores it holds
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.models = {name: load_spec(spec, device) for name, spec in models.items()}
        self.info = [model_info(name, spec, self.models[name]) for name, spec in models.items()]
        self.max_upload_bytes = max_upload_bytes
        self._infer.set_max_batch_size(max_batch_size)
        self._infer.set_batch_wait_timeout_s(batch_wait_s)

    @api.get("/healthz")
    async def healthz(self) -> dict[str, Any]:
        return {"status": "ok", "models": len(self.models)}

    @api.get("/models")
    async def list_models(self) -> list[dict[str, Any]]:
        return self.info

    @api.get("/", response_class=HTMLResponse)
    async def page(self) -> HTMLResponse:
        return HTMLResponse(page_html())

    def _model_name(self, model: str | None) -> str:
        if model is None:
            if len(self.models) == 1:
                return next(iter(self.models))
            raise HTTPException(400, f"several models are loaded: name one with ?model= ({', '.join(self.models)})")
        if model not in self.models:
            raise HTTPException(404, f"no model {model!r} here; loaded: {', '.join(self.models)} (GET /models)")
        return model

    async def _body(self, request: Request) -> bytes:
        limit = self.max_upload_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise HTTPException(413, f"the upload is {int(declared):,} bytes, above the limit of {limit:,} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HTTPException(413, f"the upload is above the limit of {limit:,} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    @api.post("/predict")
    async def predict(self, request: Request, model: str | None = None, pictures: bool = False,
                      filter_size: int | None = None) -> dict[str, Any]:
        name = self._model_name(model)
        m = self.models[name]
        if filter_size is not None:
            from ..model.scoring import check_filter_size

            try:
                check_filter_size(filter_size, "filter_size", m.config.image_size)
            except DraemZooError as exc:
                raise HTTPException(400, str(exc)) from None
        body = await self._body(request)  # a large form is parsed off the event loop
        data, filename = await asyncio.to_thread(upload_image, body, request.headers.get("content-type", ""))
        if not data:
            raise HTTPException(400, "the request has no image: send the file as the body or as a form file")
        try:
            x = await asyncio.to_thread(decode, data, m.config.image_size, filename)
        except ImageTooLarge as exc:
            raise HTTPException(413, str(exc)) from None
        except DraemZooError as exc:
            raise HTTPException(400, str(exc)) from None
        return await self._infer((name, x, filter_size, pictures, filename))

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def _infer(self, items: list[tuple]) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self._infer_sync, items)

    def _infer_sync(self, items: list[tuple]) -> list[dict[str, Any]]:
        import torch

        out: list[dict[str, Any] | None] = [None] * len(items)
        groups: dict[tuple, list[int]] = {}
        for i, (name, _, fs, _, _) in enumerate(items):
            groups.setdefault((name, fs), []).append(i)
        for (name, fs), idx in groups.items():
            m = self.models[name]
            device = next(m.parameters()).device
            x = torch.stack([items[i][1] for i in idx]).to(device).float() / 255
            pred = m.predict(x, filter_size=fs)
            recs = prediction_records([items[i][4] for i in idx], pred, m.score_config.image_threshold)
            for j, (i, rec) in enumerate(zip(idx, recs)):
                rec["model"] = name
                if items[i][3]:
                    from .pictures import picture_pngs

                    rec["pictures"] = {k: base64.b64encode(v).decode("ascii")
                                       for k, v in picture_pngs(x[j].cpu(), pred.anomaly_map[j].cpu()).items()}
                out[i] = rec
        return out  # type: ignore[return-value]


def build_app(models: dict[str, str], *, device: str = "auto", replicas: int | None = 1,
              autoscaling: dict[str, Any] | None = None, gpus_per_replica: float = 0.0, cpus_per_replica: float = 1.0,
              max_batch_size: int = 8, batch_wait_s: float = 0.01, max_upload_bytes: int = 64 << 20):
    """The Ray Serve application for ``models`` ({name: spec}): fixed ``replicas`` or an ``autoscaling``
    config (min_replicas, max_replicas, target_ongoing_requests), each replica on ``gpus_per_replica``."""
    options: dict[str, Any] = {"ray_actor_options": {"num_gpus": gpus_per_replica, "num_cpus": cpus_per_replica}}
    if autoscaling:
        options["autoscaling_config"] = autoscaling
        options["num_replicas"] = "auto"
    else:
        options["num_replicas"] = replicas or 1
    return DraemService.options(**options).bind(models, device=device, max_upload_bytes=max_upload_bytes,
                                                max_batch_size=max_batch_size, batch_wait_s=batch_wait_s,
                                                threads=max(1, round(cpus_per_replica)))


def start_ray(address: str | None = None) -> float:
    """Start a local Ray (or join ``address``); returns the GPUs the cluster has."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    return float(ray.cluster_resources().get("GPU", 0))


def start(app, host: str = "127.0.0.1", port: int = 8000, address: str | None = None) -> str:
    """Start Ray (or join ``address``), Serve's HTTP proxy on host:port, and the application; returns its URL."""
    start_ray(address)
    serve.start(http_options={"host": host, "port": port})
    serve.run(app, name="draem-zoo", route_prefix="/")
    return f"http://{host}:{port}"


def serve_forever() -> None:
    """Block until Ctrl-C, then stop the application."""
    import time

    try:
        while True:
            time.sleep(3600)
    finally:
        serve.shutdown()
