"""An in-memory HTTP stand-in of the Hugging Face Hub, for tests (no internet needed).

The real ``huggingface_hub`` client (written against 2.4.0) runs end to end against it on 127.0.0.1:
``create_repo``, ``create_commit``/``upload_file`` (preupload, LFS batch + basic PUT upload + verify, NDJSON
commit), ``create_tag``/``delete_tag``, ``create_branch``/``delete_branch``, ``list_repo_refs``,
``list_repo_commits``, ``model_info``/``dataset_info``/``repo_info``, ``list_repo_tree``/``list_repo_files``,
``get_paths_info``, ``file_exists``, ``delete_repo``, ``hf_hub_download`` and ``snapshot_download``.

Every other route is answered with a loud 404 ("hub stand-in: route not implemented: GET /api/xyz") and
recorded in ``HubStandIn.unknown_routes``, so that a client upgrade calling new routes fails visibly.

How the real Hub is mimicked (what the client relies on):

* A new repo gets an "initial commit" holding the default ``.gitattributes`` (as on huggingface.co); that file
  decides which paths the preupload route answers "lfs" for, together with size (> 10 MB) and binary content.
* LFS objects live in a per-repo store keyed by sha256; the batch API only hands out an upload action for objects
  the repo does not hold yet. Upload and download URLs of LFS objects point at a "storage" origin,
  ``http://localhost:<port>`` (same server, different origin than the ``http://127.0.0.1:<port>`` endpoint), so
  the client treats it like the real S3/CDN: signed URL, no Authorization header sent to it.
* ``/resolve/`` answers regular files with 200 (ETag = git blob sha1) and LFS files with a 302 to the storage
  origin carrying ``X-Linked-Etag`` (sha256), ``X-Linked-Size`` and ``X-Repo-Commit``, like the real Hub.
* Write routes need ``Authorization: Bearer <token>``; a wrong token is a 401 everywhere; private repos are
  invisible (401/404 ``X-Error-Code: RepoNotFound``) without the token.
* A commit whose resulting tree equals its parent's creates no commit: the route answers with the current head
  (the 2.4.0 client never even sends such a commit when the preupload route reports the remote ``oid``s,
  see ``test_hub_server.py``).

Pointing an already imported client at the stand-in needs more than ``HF_ENDPOINT``: see ``hub_client``.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as _dt
import fnmatch
import hashlib
import hmac
import importlib
import json
import os
import re
import secrets
import socket
import sys
import threading
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

import pytest

DEFAULT_TOKEN = "hf_dummy_test_token_123"
STAND_IN_USER = "stand-in-user"  # namespace used when create_repo gets a bare name
LFS_SIZE_THRESHOLD = 10_000_000  # files over ~10 MB must go through LFS (as on the Hub)
MAX_REGULAR_FILE_SIZE = LFS_SIZE_THRESHOLD
PAGE_SIZE = 1000  # tree / commits listings are paginated with a Link header, like the Hub

REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
RESERVED_NAMESPACES = {"api", "datasets", "spaces", "kernels", "buckets", "models", "__stand_in"}

# The .gitattributes that huggingface.co puts in the "initial commit" of a new model repo.
DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in (
        "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5", "*.joblib", "*.lfs.*",
        "*.mlmodel", "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet", "*.pb",
        "*.pickle", "*.pkl", "*.pt", "*.pth", "*.rar", "*.safetensors", "saved_model/**/*", "*.tar.*",
        "*.tar", "*.tflite", "*.tgz", "*.wasm", "*.xz", "*.zip", "*.zst", "*tfevents*",
    )
)


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob (what ``git hash-object`` prints)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _now() -> str:
    now = _dt.datetime.now(_dt.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


class HubError(Exception):
    """An HTTP error answer (status, JSON ``{"error": message}``, optional X-Error-Code)."""

    def __init__(self, status: int, message: str, error_code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})
        if error_code:
            self.headers["X-Error-Code"] = error_code
        self.headers.setdefault("X-Error-Message", message.splitlines()[0][:200])


class _NotImplementedRoute(Exception):
    def __init__(self, reason: str = ""):
        super().__init__(reason)
        self.reason = reason


@dataclass
class _Entry:
    """A file in a commit's tree."""

    size: int
    blob_id: str  # git oid: sha1 of the content (regular) or of the LFS pointer (LFS)
    sha256: str
    lfs: bool

    @property
    def pointer_size(self) -> int:
        return len(lfs_pointer(self.sha256, self.size))

    def info(self) -> dict[str, Any]:
        return {"size": self.size, "oid": self.blob_id, "sha256": self.sha256, "lfs": self.lfs}


@dataclass
class _Commit:
    id: str
    parents: list[str]
    title: str
    message: str
    date: str
    tree: dict[str, _Entry]


@dataclass
class _Repo:
    repo_type: str
    repo_id: str
    private: bool
    created_at: str
    mongo_id: str
    sdk: str | None = None
    commits: dict[str, _Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    lfs_objects: dict[str, bytes] = field(default_factory=dict)  # sha256 -> bytes (what storage serves)
    lfs_sizes: dict[str, int] = field(default_factory=dict)  # sha256 -> size as uploaded
    blobs: dict[str, bytes] = field(default_factory=dict)  # git blob sha1 -> bytes

    def read(self, entry: _Entry) -> bytes:
        return self.lfs_objects[entry.sha256] if entry.lfs else self.blobs[entry.blob_id]


@dataclass
class _Response:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None,
          content_type: str = "application/json; charset=utf-8") -> _Response:
    return _Response(status, {"Content-Type": content_type, **(headers or {})}, json.dumps(data).encode())


def _commit_id(parent: str | None, title: str, message: str, tree: dict[str, _Entry]) -> str:
    h = hashlib.sha1()
    h.update(f"parent {parent or ''}\ntitle {title}\nmessage {message}\n".encode())
    for path in sorted(tree):
        e = tree[path]
        h.update(f"{path}\0{e.blob_id}\0{e.sha256}\0{int(e.lfs)}\n".encode())
    return h.hexdigest()


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes", "on")


def _front_matter(text: str) -> tuple[bool, Any]:
    """(has_metadata, parsed YAML) of a README's front matter; raises ValueError on invalid YAML."""
    import yaml

    match = re.match(r"^\s*---\s*\n(.*?)\n---\s*(\n|$)", text, re.DOTALL)
    if not match:
        return False, None
    try:
        data = yaml.safe_load(match.group(1))
    except yaml.YAMLError as exc:
        raise ValueError(f"Invalid YAML in README.md front matter: {exc}") from exc
    if data is not None and not isinstance(data, dict):
        raise ValueError("README.md metadata must be a YAML mapping")
    return data is not None, data


# license identifiers the Hub accepts in model cards (a subset of its list; enough for tests)
HUB_LICENSES = {
    "apache-2.0", "mit", "openrail", "bigscience-openrail-m", "creativeml-openrail-m", "afl-3.0", "artistic-2.0",
    "bsl-1.0", "bsd", "bsd-2-clause", "bsd-3-clause", "bsd-3-clause-clear", "c-uda", "cc", "cc0-1.0", "cc-by-2.0",
    "cc-by-2.5", "cc-by-3.0", "cc-by-4.0", "cc-by-sa-3.0", "cc-by-sa-4.0", "cc-by-nc-2.0", "cc-by-nc-3.0",
    "cc-by-nc-4.0", "cc-by-nd-4.0", "cc-by-nc-nd-3.0", "cc-by-nc-nd-4.0", "cc-by-nc-sa-2.0", "cc-by-nc-sa-3.0",
    "cc-by-nc-sa-4.0", "cdla-sharing-1.0", "cdla-permissive-1.0", "cdla-permissive-2.0", "wtfpl", "ecl-2.0",
    "epl-1.0", "epl-2.0", "eupl-1.1", "eupl-1.2", "agpl-3.0", "gfdl", "gpl", "gpl-2.0", "gpl-3.0", "lgpl",
    "lgpl-2.1", "lgpl-3.0", "isc", "mpl-2.0", "odc-by", "odbl", "osl-3.0", "postgresql", "ofl-1.1", "ncsa",
    "unlicense", "zlib", "pddl", "unknown", "other",
}


def _card_errors(data: dict) -> list[str]:
    errors = []
    lic = data.get("license")
    for one in (lic if isinstance(lic, list) else [lic] if lic is not None else []):
        if one not in HUB_LICENSES:
            errors.append(f'"license" must be one of the Hub license identifiers, got {one!r}')
    if lic == "other" and not (data.get("license_name") and data.get("license_link")):
        errors.append('"license: other" requires "license_name" and "license_link"')
    if "model-index" in data:
        from huggingface_hub.repocard_data import model_index_to_eval_results

        try:
            model_index_to_eval_results(data["model-index"])
        except Exception as exc:  # the client's own parser rejects it
            errors.append(f'"model-index" is malformed: {type(exc).__name__}: {exc}')
    return errors


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "HubStandIn/1.0"
    timeout = 30  # idle keep-alive connections are dropped after this

    def setup(self) -> None:
        super().setup()
        self.server.stand_in._track_connection(self.connection, open_=True)  # type: ignore[attr-defined]

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.stand_in._track_connection(self.connection, open_=False)  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _serve(self) -> None:
        body = self._read_body()
        stand_in: HubStandIn = self.server.stand_in  # type: ignore[attr-defined]
        resp = stand_in._dispatch(self.command, self.path, self.headers, body)
        self.send_response(resp.status)
        for key, value in resp.headers.items():  # header values must be one latin-1 line
            self.send_header(key, str(value).replace("\r", " ").replace("\n", " ").encode(
                "latin-1", "backslashreplace").decode("latin-1"))
        self.send_header("Content-Length", str(len(resp.body)))
        self.end_headers()
        if self.command != "HEAD" and resp.body:
            self.wfile.write(resp.body)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _serve


class HubStandIn:
    """In-memory Hugging Face Hub stand-in served over HTTP on 127.0.0.1 (see module docstring)."""

    def __init__(self, token: str = DEFAULT_TOKEN, *, storage_host: str = "localhost"):
        self.token = token
        self.storage_host = storage_host  # host of the signed LFS upload/download URLs ("CDN"/"S3")
        self.endpoint: str = ""
        self.requests: list[tuple[str, str]] = []
        self.unknown_routes: list[tuple[str, str]] = []
        self.request_log: list[dict[str, Any]] = []  # method, path, query, host, authorization, status
        self.server_errors: list[str] = []  # tracebacks of bugs in the stand-in itself (answered with 500)
        self.lfs_threshold = LFS_SIZE_THRESHOLD
        self.page_size = PAGE_SIZE
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._uploads: dict[str, tuple[tuple[str, str], str, int]] = {}  # ticket -> (repo key, sha256, size)
        self._secret = secrets.token_bytes(16)
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._port = 0

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> str:
        if self._server is not None:
            return self.endpoint
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        server.stand_in = self  # type: ignore[attr-defined]
        self._server = server
        self._port = server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self._port}"
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="hub-stand-in", daemon=True)
        self._thread.start()
        return self.endpoint

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:  # drop idle keep-alive connections so their threads end now
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> HubStandIn:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _track_connection(self, conn: socket.socket, open_: bool) -> None:
        with self._lock:
            (self._connections.add if open_ else self._connections.discard)(conn)

    @property
    def storage_base(self) -> str:
        return f"http://{self.storage_host}:{self._port}"

    # ------------------------------------------------------------------ inspection helpers for tests
    def _repo(self, repo_id: str, repo_type: str) -> _Repo:
        try:
            return self._repos[(repo_type, repo_id)]
        except KeyError:
            raise KeyError(f"hub stand-in: no {repo_type} repo {repo_id!r}") from None

    def commits(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> list[dict]:
        """History of ``revision`` (default: main), newest first: ``{"id", "title", "message", "parents",
        "files": {path: {"size", "oid" (git blob id), "sha256", "lfs"}}}``."""
        with self._lock:
            repo = self._repo(repo_id, repo_type)
            out = []
            cid: str | None = self._resolve(repo, revision)
            while cid is not None:
                c = repo.commits[cid]
                out.append({"id": c.id, "title": c.title, "message": c.message, "parents": list(c.parents),
                            "files": {p: e.info() for p, e in sorted(c.tree.items())}})
                cid = c.parents[0] if c.parents else None
            return out

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        """The bytes the stand-in serves for each file of ``revision`` (tampered bytes included)."""
        with self._lock:
            repo = self._repo(repo_id, repo_type)
            tree = repo.commits[self._resolve(repo, revision)].tree
            return {path: repo.read(entry) for path, entry in sorted(tree.items())}

    def tags(self, repo_id: str, repo_type: str = "model") -> dict[str, str]:
        with self._lock:
            return dict(self._repo(repo_id, repo_type).tags)

    def branches(self, repo_id: str, repo_type: str = "model") -> dict[str, str]:
        with self._lock:
            return dict(self._repo(repo_id, repo_type).branches)

    def tamper(self, repo_id: str, path: str, data: bytes, *, revision: str = "main",
               repo_type: str = "model") -> None:
        """Overwrite the stored bytes behind ``path`` (at ``revision``) without a commit, like corrupted
        storage: metadata (ETag / X-Linked-Etag = committed sha256, X-Linked-Size, tree listing) keeps describing
        the committed content, only the served bytes change (every revision sharing that object sees them)."""
        with self._lock:
            repo = self._repo(repo_id, repo_type)
            entry = repo.commits[self._resolve(repo, revision)].tree[path]
            if entry.lfs:
                repo.lfs_objects[entry.sha256] = bytes(data)
            else:
                repo.blobs[entry.blob_id] = bytes(data)

    # ------------------------------------------------------------------ request plumbing
    def _dispatch(self, method: str, raw_target: str, headers: Any, body: bytes) -> _Response:
        split = urlsplit(raw_target)
        path, query = split.path, parse_qs(split.query, keep_blank_values=True)
        auth_header = headers.get("Authorization")
        with self._lock:
            self.requests.append((method, path))
        try:
            resp = self._route(method, path, query, headers, body)
        except HubError as err:
            resp = _json({"error": err.message}, err.status, err.headers)
        except _NotImplementedRoute as exc:
            resp = self._not_implemented(method, path, split.query, exc.reason)
        except Exception:  # a bug in the stand-in: make it loud
            tb = traceback.format_exc()
            with self._lock:
                self.server_errors.append(f"{method} {raw_target}\n{tb}")
            sys.stderr.write(f"hub stand-in: internal error on {method} {raw_target}\n{tb}")
            resp = _json({"error": f"hub stand-in internal error on {method} {path}:\n{tb}"}, 500)
        with self._lock:
            self.request_log.append({"method": method, "path": path, "query": split.query,
                                     "host": headers.get("Host"), "authorization": auth_header,
                                     "status": resp.status})
        return resp

    def _not_implemented(self, method: str, path: str, query: str, reason: str = "") -> _Response:
        target = path + (f"?{query}" if query else "")
        message = f"hub stand-in: route not implemented: {method} {target}" + (f" ({reason})" if reason else "")
        with self._lock:
            self.unknown_routes.append((method, path))
        sys.stderr.write(message + "\n")
        return _json({"error": message}, 404, {"X-Error-Message": message[:200]})

    def _authenticated(self, headers: Any) -> bool:
        """True with the right token, False without any; a wrong token is a 401 (as on the Hub)."""
        value = headers.get("Authorization")
        if value is None:
            return False
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip(), self.token):
            raise HubError(401, "Invalid credentials in Authorization header")
        return True

    def _require_write(self, authed: bool) -> None:
        if not authed:
            raise HubError(401, "hub stand-in: write access requires 'Authorization: Bearer <token>'")

    def _get_repo(self, repo_type: str, repo_id: str, authed: bool) -> _Repo:
        repo = self._repos.get((repo_type, repo_id))
        if repo is None or (repo.private and not authed):
            raise HubError(404 if authed else 401, "Repository not found", "RepoNotFound")
        return repo

    @staticmethod
    def _resolve(repo: _Repo, revision: str) -> str:
        rev = revision
        if rev.startswith("refs/heads/") and rev[len("refs/heads/"):] in repo.branches:
            return repo.branches[rev[len("refs/heads/"):]]
        if rev.startswith("refs/tags/") and rev[len("refs/tags/"):] in repo.tags:
            return repo.tags[rev[len("refs/tags/"):]]
        if rev in repo.branches:
            return repo.branches[rev]
        if rev in repo.tags:
            return repo.tags[rev]
        if re.fullmatch(r"[0-9a-f]{40}", rev) and rev in repo.commits:
            return rev
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def _sign(self, *parts: str) -> str:
        return hmac.new(self._secret, "\0".join(parts).encode(), hashlib.sha256).hexdigest()[:32]

    # ------------------------------------------------------------------ routing
    _API_REPO = re.compile(r"^/api/(models|datasets|spaces)/([^/]+)/([^/]+)(/.*)?$")
    _LFS = re.compile(r"^/(datasets/|spaces/)?([^/]+)/([^/]+)\.git/info/lfs/objects/(batch|verify)$")
    _RESOLVE = re.compile(r"^/(datasets/|spaces/)?([^/]+)/([^/]+)/resolve/([^/]+)/(.+)$")
    _UPLOAD = re.compile(r"^/__stand_in/lfs-upload/([A-Za-z0-9_-]+)$")
    _CDN = re.compile(r"^/__stand_in/cdn/(model|dataset|space)/([^/]+)/([^/]+)/([0-9a-f]{64})$")

    def _route(self, method: str, path: str, query: dict, headers: Any, body: bytes) -> _Response:
        if path == "/api/repos/create" and method == "POST":
            return self._create_repo(headers, body)
        if path == "/api/repos/delete" and method == "DELETE":
            return self._delete_repo(headers, body)
        if path == "/api/validate-yaml" and method == "POST":
            return self._validate_yaml(headers, body)
        if m := self._UPLOAD.match(path):
            if method == "PUT":
                return self._lfs_put(m.group(1), body)
        elif m := self._CDN.match(path):
            if method in ("GET", "HEAD"):
                return self._cdn(m.group(1), f"{unquote(m.group(2))}/{unquote(m.group(3))}", m.group(4), query,
                                 headers)
        elif m := self._LFS.match(path):
            repo_type = REPO_TYPES[(m.group(1) or "models/").rstrip("/")]
            repo_id = f"{unquote(m.group(2))}/{unquote(m.group(3))}"
            if method == "POST" and m.group(4) == "batch":
                return self._lfs_batch(repo_type, repo_id, headers, body)
            if method == "POST" and m.group(4) == "verify":
                return self._lfs_verify(repo_type, repo_id, headers, body)
        elif m := self._API_REPO.match(path):
            return self._api_repo(method, REPO_TYPES[m.group(1)], f"{unquote(m.group(2))}/{unquote(m.group(3))}",
                                  m.group(4) or "", query, headers, body)
        elif m := self._RESOLVE.match(path):
            if method in ("GET", "HEAD"):
                repo_type = REPO_TYPES[(m.group(1) or "models/").rstrip("/")]
                return self._resolve_file(repo_type, f"{unquote(m.group(2))}/{unquote(m.group(3))}",
                                          unquote(m.group(4)), unquote(m.group(5)), headers)
        raise _NotImplementedRoute()

    def _api_repo(self, method: str, repo_type: str, repo_id: str, rest: str, query: dict, headers: Any,
                  body: bytes) -> _Response:
        segments = rest.split("/")[1:] if rest else []
        name = segments[0] if segments else ""
        arg = unquote(segments[1]) if len(segments) > 1 else None
        if method == "GET" and not segments:
            return self._info(repo_type, repo_id, None, query, headers)
        if method == "GET" and name == "revision" and len(segments) == 2:
            return self._info(repo_type, repo_id, arg, query, headers)
        if method == "POST" and name == "preupload" and len(segments) == 2:
            if _truthy(query.get("create_pr", [""])[0]):
                raise _NotImplementedRoute("create_pr is not supported by the stand-in")
            return self._preupload(repo_type, repo_id, arg, headers, body)
        if method == "POST" and name == "commit" and len(segments) == 2:
            for unsupported in ("create_pr", "hot_reload"):
                if _truthy(query.get(unsupported, [""])[0]):
                    raise _NotImplementedRoute(f"{unsupported} is not supported by the stand-in")
            return self._commit(repo_type, repo_id, arg, headers, body)
        if method == "GET" and name == "tree" and len(segments) in (2, 3):
            sub = unquote(segments[2]) if len(segments) == 3 else ""
            return self._tree(repo_type, repo_id, arg, sub, query, headers)
        if method == "POST" and name == "paths-info" and len(segments) == 2:
            return self._paths_info(repo_type, repo_id, arg, headers, body)
        if method == "GET" and name == "refs" and len(segments) == 1:
            return self._refs(repo_type, repo_id, query, headers)
        if method == "GET" and name == "commits" and len(segments) == 2:
            return self._list_commits(repo_type, repo_id, arg, query, headers)
        if name == "tag" and len(segments) == 2 and method in ("POST", "DELETE"):
            return self._tag(method, repo_type, repo_id, arg, headers, body)
        if name == "branch" and len(segments) == 2 and method in ("POST", "DELETE"):
            return self._branch(method, repo_type, repo_id, arg, headers, body)
        raise _NotImplementedRoute()

    # ------------------------------------------------------------------ repos
    def _create_repo(self, headers: Any, body: bytes) -> _Response:
        self._require_write(self._authenticated(headers))
        payload = json.loads(body or b"{}")
        repo_type = payload.get("type") or "model"
        if repo_type not in URL_PREFIX:
            raise _NotImplementedRoute(f"repo type {repo_type!r} is not supported by the stand-in")
        name = payload.get("name") or ""
        namespace = payload.get("organization") or STAND_IN_USER
        for part in (namespace, name):
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", part) or part.endswith(".git") or "--" in part:
                raise HubError(400, f"Invalid repo name: {namespace}/{name}")
        if namespace in RESERVED_NAMESPACES:
            raise HubError(400, f"Namespace {namespace!r} is reserved")
        if repo_type == "space" and not payload.get("sdk"):
            raise HubError(400, "sdk is required for a Space")
        repo_id = f"{namespace}/{name}"
        url = f"{self.endpoint}/{URL_PREFIX[repo_type]}{repo_id}"
        visibility = payload.get("visibility")
        private = visibility in ("private", "protected") if visibility is not None else bool(payload.get("private"))
        with self._lock:
            if (repo_type, repo_id) in self._repos:
                return _json({"error": f"You already created this {repo_type} repo", "url": url}, 409)
            repo = _Repo(repo_type=repo_type, repo_id=repo_id, private=private, created_at=_now(),
                         mongo_id=secrets.token_hex(12), sdk=payload.get("sdk"))
            content = DEFAULT_GITATTRIBUTES.encode()
            blob_id = git_blob_sha1(content)
            repo.blobs[blob_id] = content
            tree = {".gitattributes": _Entry(len(content), blob_id, hashlib.sha256(content).hexdigest(), False)}
            cid = _commit_id(None, "initial commit", "", tree)
            repo.commits[cid] = _Commit(cid, [], "initial commit", "", repo.created_at, tree)
            repo.branches["main"] = cid
            self._repos[(repo_type, repo_id)] = repo
        return _json({"url": url, "name": repo_id, "id": repo.mongo_id})

    def _delete_repo(self, headers: Any, body: bytes) -> _Response:
        authed = self._authenticated(headers)
        self._require_write(authed)
        payload = json.loads(body or b"{}")
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or STAND_IN_USER}/{payload.get('name')}"
        with self._lock:
            self._get_repo(repo_type, repo_id, authed)
            del self._repos[(repo_type, repo_id)]
        return _Response(200)

    def _validate_yaml(self, headers: Any, body: bytes) -> _Response:
        """The Hub's card checks, approximated: YAML parses, a known license id (``other`` needs
        license_name and license_link), and a model-index that huggingface_hub itself can parse."""
        self._authenticated(headers)
        payload = json.loads(body or b"{}")
        try:
            has_metadata, data = _front_matter(payload.get("content") or "")
            errors = _card_errors(data or {}) if has_metadata else []
        except ValueError as exc:
            errors = [str(exc)]
        if errors:
            return _json({"errors": [{"message": e} for e in errors], "warnings": []}, 400)
        warnings = [] if has_metadata else [{"message": "empty or missing yaml metadata in repo card"}]
        return _json({"errors": [], "warnings": warnings})

    def _info(self, repo_type: str, repo_id: str, revision: str | None, query: dict, headers: Any) -> _Response:
        authed = self._authenticated(headers)
        with self._lock:
            repo = self._get_repo(repo_type, repo_id, authed)
            cid = self._resolve(repo, revision or "main")
            commit = repo.commits[cid]
            blobs = _truthy(query.get("blobs", [""])[0])
            siblings = []
            for path, e in sorted(commit.tree.items()):
                sibling: dict[str, Any] = {"rfilename": path}
                if blobs:
                    sibling.update(size=e.size, blobId=e.blob_id)
                    if e.lfs:
                        sibling["lfs"] = {"sha256": e.sha256, "size": e.size, "pointerSize": e.pointer_size}
                siblings.append(sibling)
            card: dict | None = None
            if "README.md" in commit.tree:
                with contextlib.suppress(ValueError, UnicodeDecodeError):
                    card = _front_matter(repo.read(commit.tree["README.md"]).decode())[1]
            data: dict[str, Any] = {
                "_id": repo.mongo_id, "id": repo.repo_id, "author": repo.repo_id.split("/")[0], "sha": cid,
                "lastModified": commit.date, "createdAt": repo.created_at, "private": repo.private,
                "disabled": False, "gated": False, "downloads": 0, "likes": 0,
                "tags": sorted(set((card or {}).get("tags") or []) | {"region:us"}),
                "siblings": siblings, "usedStorage": sum(e.size for e in commit.tree.values()),
            }
            if card is not None:
                data["cardData"] = card
            if repo_type == "model":
                data["modelId"] = repo.repo_id
                data["spaces"] = []
                if card and card.get("library_name"):
                    data["library_name"] = card["library_name"]
            if repo_type == "space":
                data["sdk"] = repo.sdk
            return _json(data)

    # ------------------------------------------------------------------ upload
    def _lfs_patterns(self, repo: _Repo, tree: dict[str, _Entry]) -> list[str]:
        if ".gitattributes" not in tree:
            return []
        text = repo.read(tree[".gitattributes"]).decode(errors="replace")
        return [line.split()[0] for line in text.splitlines()
                if line.strip() and not line.lstrip().startswith("#") and "filter=lfs" in line.split()[1:]]

    @staticmethod
    def _matches(path: str, pattern: str) -> bool:
        pattern = pattern.lstrip("/")
        if "/" not in pattern:
            return fnmatch.fnmatchcase(path.rsplit("/", 1)[-1], pattern)
        return fnmatch.fnmatchcase(path, pattern) or fnmatch.fnmatchcase(path, pattern.replace("**/", ""))

    def _should_ignore(self, path: str, gitignore: str | None) -> bool:
        if not gitignore:
            return False
        ignored = False
        for line in gitignore.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            pattern = line[1:] if negate else line
            hit = (path.startswith(pattern.rstrip("/") + "/") if pattern.endswith("/")
                   else self._matches(path, pattern))
            if hit:
                ignored = not negate
        return ignored

    def _preupload(self, repo_type: str, repo_id: str, revision: str, headers: Any, body: bytes) -> _Response:
        authed = self._authenticated(headers)
        self._require_write(authed)
        payload = json.loads(body or b"{}")
        files = payload.get("files")
        if not isinstance(files, list):
            raise HubError(400, "Invalid preupload payload: 'files' must be a list")
        with self._lock:
            repo = self._get_repo(repo_type, repo_id, authed)
            cid = self._resolve(repo, revision)
            tree = repo.commits[cid].tree
            patterns = self._lfs_patterns(repo, tree)
            gitignore = payload.get("gitIgnore")
            if gitignore is None and ".gitignore" in tree:
                gitignore = repo.read(tree[".gitignore"]).decode(errors="replace")
            out = []
            for f in files:
                path, size = f["path"], int(f["size"])
                sample = base64.b64decode(f.get("sample") or "")
                lfs = (size > self.lfs_threshold or b"\0" in sample
                       or any(self._matches(path, p) for p in patterns))
                info: dict[str, Any] = {"path": path, "uploadMode": "lfs" if lfs else "regular",
                                        "shouldIgnore": self._should_ignore(path, gitignore)}
                if path in tree:  # lets the client skip unchanged files (sha256 for LFS, git sha1 otherwise)
                    info["oid"] = tree[path].sha256 if tree[path].lfs else tree[path].blob_id
                out.append(info)
            return _json({"files": out, "commitOid": cid})

    def _lfs_batch(self, repo_type: str, repo_id: str, headers: Any, body: bytes) -> _Response:
        authed = self._authenticated(headers)
        payload = json.loads(body or b"{}")
        if payload.get("operation") != "upload":
            raise _NotImplementedRoute(f"LFS batch operation {payload.get('operation')!r}")
        self._require_write(authed)
        if "basic" not in (payload.get("transfers") or ["basic"]):
            raise _NotImplementedRoute("only the 'basic' LFS transfer is supported")
        if payload.get("hash_algo", "sha256") != "sha256":
            raise HubError(422, "Only sha256 is supported")
        with self._lock:
            repo = self._get_repo(repo_type, repo_id, authed)
            ref = (payload.get("ref") or {}).get("name")
            if ref is not None:
                self._resolve(repo, ref)
            objects = []
            base = f"{self.endpoint}/{URL_PREFIX[repo_type]}{repo_id}.git/info/lfs/objects"
            for obj in payload.get("objects") or []:
                oid, size = obj.get("oid"), obj.get("size")
                if not (isinstance(oid, str) and re.fullmatch(r"[0-9a-f]{64}", oid)) or not isinstance(size, int):
                    objects.append({"oid": str(oid), "size": size if isinstance(size, int) else 0,
                                    "error": {"code": 422, "message": "Invalid oid or size"}})
                    continue
                if repo.lfs_sizes.get(oid) == size:  # already stored: no action, the client skips the upload
                    objects.append({"oid": oid, "size": size})
                    continue
                ticket = secrets.token_urlsafe(18)
                self._uploads[ticket] = ((repo_type, repo_id), oid, size)
                objects.append({"oid": oid, "size": size, "authenticated": True, "actions": {
                    "upload": {"href": f"{self.storage_base}/__stand_in/lfs-upload/{ticket}", "expires_in": 900},
                    "verify": {"href": f"{base}/verify", "expires_in": 900},
                }})
        return _json({"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
                     content_type="application/vnd.git-lfs+json")

    def _lfs_put(self, ticket: str, body: bytes) -> _Response:
        with self._lock:
            upload = self._uploads.pop(ticket, None)
        if upload is None:
            raise HubError(403, "hub stand-in: unknown or already used LFS upload URL")
        key, oid, size = upload
        actual = hashlib.sha256(body).hexdigest()
        if len(body) != size or actual != oid:
            with self._lock:
                self._uploads[ticket] = upload  # allow a retry with the right bytes
            raise HubError(400, f"hub stand-in: LFS upload mismatch: expected sha256 {oid} / {size} bytes, "
                                f"got {actual} / {len(body)} bytes")
        with self._lock:
            repo = self._repos.get(key)
            if repo is None:
                raise HubError(404, "Repository not found", "RepoNotFound")
            repo.lfs_objects[oid] = body
            repo.lfs_sizes[oid] = size
        return _Response(200, {"ETag": f'"{hashlib.md5(body).hexdigest()}"'})

    def _lfs_verify(self, repo_type: str, repo_id: str, headers: Any, body: bytes) -> _Response:
        authed = self._authenticated(headers)
        self._require_write(authed)
        payload = json.loads(body or b"{}")
        with self._lock:
            repo = self._get_repo(repo_type, repo_id, authed)
            if repo.lfs_sizes.get(payload.get("oid")) != payload.get("size"):
                raise HubError(404, f"LFS object {payload.get('oid')} not found")
        return _json({"success": True})

    @staticmethod
    def _check_path(path: Any) -> str:
        if not isinstance(path, str) or not path or path.startswith("/") or path.endswith("/"):
            raise HubError(400, f"Invalid path: {path!r}")
        if any(part in ("", ".", "..", ".git") for part in path.split("/")):
            raise HubError(400, f"Invalid path: {path!r}")
        return path

    def _commit(self, repo_type: str, repo_id: str, revision: str, headers: Any, body: bytes) -> _Response:
        authed = self._authenticated(headers)
        self._require_write(authed)
        try:
            lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise HubError(400, f"Invalid NDJSON commit payload: {exc}") from exc
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "The first NDJSON line must be the commit header")
        header = lines[0].get("value") or {}
        title = header.get("summary")
        if not isinstance(title, str) or not title.strip():
            raise HubError(400, "Commit summary is required")
        message = header.get("description") or ""
        with self._lock:
            repo = self._get_repo(repo_type, repo_id, authed)
            if revision not in repo.branches:
                self._resolve(repo, revision)  # 404 RevisionNotFound for unknown revisions
                raise HubError(400, f"Invalid rev id: {revision} (commits must target a branch)")
            head = repo.branches[revision]
            parent_commit = header.get("parentCommit")
            if parent_commit is not None and not head.startswith(parent_commit):
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            tree = dict(repo.commits[head].tree)
            new_blobs: dict[str, bytes] = {}
            for line in lines[1:]:
                key, value = line.get("key"), line.get("value") or {}
                if key == "file":
                    path = self._check_path(value.get("path"))
                    if value.get("encoding", "base64") != "base64":
                        raise HubError(400, f"Unsupported encoding {value.get('encoding')!r}")
                    content = base64.b64decode(value.get("content") or "")
                    if b"\0" in content:
                        raise HubError(400, "Your push was rejected because it contains binary files. Please use "
                                            f"LFS to store binary files ({path}).")
                    if len(content) > MAX_REGULAR_FILE_SIZE:
                        raise HubError(400, f"{path} is larger than 10 MB: it must be stored with LFS")
                    blob_id = git_blob_sha1(content)
                    new_blobs[blob_id] = content
                    tree[path] = _Entry(len(content), blob_id, hashlib.sha256(content).hexdigest(), False)
                elif key == "lfsFile":
                    path = self._check_path(value.get("path"))
                    oid = value.get("oid")
                    if value.get("algo", "sha256") != "sha256" or oid not in repo.lfs_sizes:
                        raise HubError(400, f"LFS object {oid} for {path} was not uploaded to this repo")
                    size = repo.lfs_sizes[oid]
                    if value.get("size") is not None and value["size"] != size:
                        raise HubError(400, f"LFS object {oid}: size {value['size']} != uploaded size {size}")
                    tree[path] = _Entry(size, git_blob_sha1(lfs_pointer(oid, size)), oid, True)
                elif key == "deletedFile":
                    path = self._check_path(value.get("path"))
                    if tree.pop(path, None) is None:
                        raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                elif key == "deletedFolder":
                    folder = str(value.get("path") or "").rstrip("/")
                    doomed = [p for p in tree if p.startswith(folder + "/")] if folder else list(tree)
                    if not doomed:
                        raise HubError(404, f"A folder with this name doesn't exist: {folder}", "EntryNotFound")
                    for p in doomed:
                        del tree[p]
                else:
                    raise _NotImplementedRoute(f"commit operation {key!r} is not supported by the stand-in")
            prefix = f"{self.endpoint}/{URL_PREFIX[repo_type]}{repo_id}/commit/"
            if tree == repo.commits[head].tree:  # nothing changed: no new commit, answer with the head
                return _json({"success": True, "commitOid": head, "commitUrl": prefix + head, "hookOutput": ""})
            repo.blobs.update(new_blobs)
            cid = _commit_id(head, title, message, tree)
            repo.commits[cid] = _Commit(cid, [head], title, message, _now(), tree)
            repo.branches[revision] = cid
        return _json({"success": True, "commitOid": cid, "commitUrl": prefix + cid, "hookOutput": ""})

    # ------------------------------------------------------------------ listings
    def _last_commit(self, repo: _Repo, cid: str, path: str) -> dict[str, str]:
        """The newest commit (first-parent history of ``cid``) that changed ``path`` (file or folder)."""

        def snapshot(tree: dict[str, _Entry]) -> dict[str, tuple]:
            return {p: (e.blob_id, e.sha256) for p, e in tree.items() if p == path or p.startswith(path + "/")}

        commit = repo.commits[cid]
        while commit.parents:
            parent = repo.commits[commit.parents[0]]
            if snapshot(commit.tree) != snapshot(parent.tree):
                break
            commit = parent
        return {"id": commit.id, "title": commit.title, "date": commit.date}

    def _entries(self, repo: _Repo, cid: str, paths: list[str], expand: bool) -> list[dict]:
        tree = repo.commits[cid].tree
        out = []
        for path in paths:
            if path in tree:
                e = tree[path]
                item: dict[str, Any] = {"type": "file", "oid": e.blob_id, "size": e.size, "path": path}
                if e.lfs:
                    item["lfs"] = {"oid": e.sha256, "size": e.size, "pointerSize": e.pointer_size}
            else:
                children = sorted((p, tree[p].blob_id) for p in tree if p.startswith(path + "/"))
                if not children:
                    continue
                oid = hashlib.sha1(repr(children).encode()).hexdigest()
                item = {"type": "directory", "oid": oid, "size": 0, "path": path}
            if expand:
                item["lastCommit"] = self._last_commit(repo, cid, path)
            out.append(item)
        return out

    def _paginated(self, items: list, query: dict, headers: Any, path: str) -> _Response:
        start = int(query.get("cursor", ["0"])[0] or 0)
        page = items[start:start + self.page_size]
        extra = {}
        if start + self.page_size < len(items):
            params = {k: v[0] for k, v in query.items() if k != "cursor"}
            params["cursor"] = str(start + self.page_size)
            host = headers.get("Host") or f"127.0.0.1:{self._port}"
            extra["Link"] = f'<http://{host}{path}?{urlencode(params)}>; rel="next"'
        return _json(page, headers=extra)

    def _tree(self, repo_type: str, repo_id: str, revision: str, sub: str, query: dict, headers: Any) -> _Response:
        authed = self._authenticated(headers)
        recursive = _truthy(query.get("recursive", [""])[0])
        expand = _truthy(query.get("expand", [""])[0])
        sub = sub.strip("/")
        with self._lock:
            repo = self._get_repo(repo_type, repo_id, authed)
            cid = self._resolve(repo, revision)
            tree = repo.commits[cid].tree
            prefix = sub + "/" if sub else ""
            below = [p for p in tree if p.startswith(prefix)]
            if sub and not below:
                raise HubError(404, f"{sub} does not exist on {revision}", "EntryNotFound",
                               {"X-Repo-Commit": cid})
            names: set[str] = set()
            for p in below:
                parts = p[len(prefix):].split("/")
                depth = len(parts) if recursive else 1
                for i in range(1, depth + 1):
                    names.add(prefix + "/".join(parts[:i]))
            dirs = sorted(n for n in names if n not in tree)
            files = sorted(n for n in names if n in tree)
            items = self._entries(repo, cid, dirs + files, expand)
        return self._paginated(items, query, headers, f"/api/{repo_type}s/{repo_id}/tree/{quote(revision, safe='')}"
                               + (f"/{quote(sub, safe='')}" if sub else ""))

    def _paths_info(self, repo_type: str, repo_id: str, revision: str, headers: Any, body: bytes) -> _Response:
        authed = self._authenticated(headers)
        if headers.get("Content-Type", "").startswith("application/json"):
            payload = json.loads(body or b"{}")
            paths, expand = payload.get("paths") or [], bool(payload.get("expand"))
        else:
            form = parse_qs(body.decode(), keep_blank_values=True)
            paths, expand = form.get("paths", []), _truthy(form.get("expand", [""])[0])
        with self._lock:
            repo = self._get_repo(repo_type, repo_id, authed)
            cid = self._resolve(repo, revision)
            return _json(self._entries(repo, cid, [p.strip("/") for p in paths], expand))

    def _refs(self, repo_type: str, repo_id: str, query: dict, headers: Any) -> _Response:
        authed = self._authenticated(headers)
        with self._lock:
            repo = self._get_repo(repo_type, repo_id, authed)
            data: dict[str, Any] = {
                "branches": [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": c}
                             for n, c in sorted(repo.branches.items())],
                "converts": [],
                "tags": [{"name": n, "ref": f"refs/tags/{n}", "targetCommit": c} for n, c in sorted(repo.tags.items())],
            }
            if _truthy(query.get("include_prs", [""])[0]):
                data["pullRequests"] = []
        return _json(data)

    def _list_commits(self, repo_type: str, repo_id: str, revision: str, query: dict, headers: Any) -> _Response:
        authed = self._authenticated(headers)
        with self._lock:
            repo = self._get_repo(repo_type, repo_id, authed)
            self._resolve(repo, revision)
            items = [{"id": c["id"], "title": c["title"], "message": c["message"],
                      "authors": [{"user": STAND_IN_USER, "avatar": ""}],
                      "date": repo.commits[c["id"]].date}
                     for c in self.commits(repo_id, repo_type, revision)]
        return self._paginated(items, query, headers, f"/api/{repo_type}s/{repo_id}/commits/{quote(revision, safe='')}")

    # ------------------------------------------------------------------ refs
    def _tag(self, method: str, repo_type: str, repo_id: str, arg: str, headers: Any, body: bytes) -> _Response:
        authed = self._authenticated(headers)
        self._require_write(authed)
        with self._lock:
            repo = self._get_repo(repo_type, repo_id, authed)
            if method == "DELETE":
                if repo.tags.pop(arg, None) is None:
                    raise HubError(404, f"Invalid rev id: {arg}", "RevisionNotFound")
                return _Response(200)
            payload = json.loads(body or b"{}")
            tag = payload.get("tag")
            if not isinstance(tag, str) or not re.fullmatch(r"[A-Za-z0-9._][A-Za-z0-9._/-]*", tag) or ".." in tag:
                raise HubError(400, f"Invalid tag name: {tag!r}")
            cid = self._resolve(repo, arg)
            if tag in repo.tags:
                raise HubError(409, f"Tag {tag} already exists")
            repo.tags[tag] = cid
        return _json({"success": True})

    def _branch(self, method: str, repo_type: str, repo_id: str, arg: str, headers: Any,
                body: bytes) -> _Response:
        authed = self._authenticated(headers)
        self._require_write(authed)
        with self._lock:
            repo = self._get_repo(repo_type, repo_id, authed)
            if method == "DELETE":
                if arg == "main":
                    raise HubError(403, "Cannot delete the default branch")
                if repo.branches.pop(arg, None) is None:
                    raise HubError(404, f"Invalid rev id: {arg}", "RevisionNotFound")
                return _Response(200)
            payload = json.loads(body or b"{}")
            if not re.fullmatch(r"[A-Za-z0-9._][A-Za-z0-9._/-]*", arg) or ".." in arg:
                raise HubError(400, f"Invalid branch name: {arg!r}")
            if arg in repo.branches:
                raise HubError(409, f"Branch {arg} already exists")
            repo.branches[arg] = self._resolve(repo, payload.get("startingPoint") or "main")
        return _json({"success": True})

    # ------------------------------------------------------------------ downloads
    @staticmethod
    def _ranged(data: bytes, headers: Any, base: dict[str, str]) -> _Response:
        base = {"Accept-Ranges": "bytes", **base}
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", (headers.get("Range") or "").strip())
        if not match or (not match.group(1) and not match.group(2)):
            return _Response(200, base, data)
        if match.group(1):
            start = int(match.group(1))
            end = min(int(match.group(2)), len(data) - 1) if match.group(2) else len(data) - 1
        else:
            start, end = max(len(data) - int(match.group(2)), 0), len(data) - 1
        if start >= len(data) or start > end:
            return _Response(416, {**base, "Content-Range": f"bytes */{len(data)}"})
        return _Response(206, {**base, "Content-Range": f"bytes {start}-{end}/{len(data)}"}, data[start:end + 1])

    def _resolve_file(self, repo_type: str, repo_id: str, revision: str, filename: str, headers: Any) -> _Response:
        authed = self._authenticated(headers)
        with self._lock:
            repo = self._get_repo(repo_type, repo_id, authed)
            cid = self._resolve(repo, revision)
            entry = repo.commits[cid].tree.get(filename)
            if entry is None:
                raise HubError(404, f"Entry not found: {filename}", "EntryNotFound", {"X-Repo-Commit": cid})
            common = {"X-Repo-Commit": cid, "Access-Control-Expose-Headers": "X-Repo-Commit, X-Linked-Etag"}
            if entry.lfs:  # like the Hub: 302 to signed storage URL, metadata on the redirect itself
                name = filename.rsplit("/", 1)[-1]
                sig = self._sign(repo_type, repo_id, entry.sha256)
                location = (f"{self.storage_base}/__stand_in/cdn/{repo_type}/{repo_id}/{entry.sha256}?"
                            + urlencode({"filename": name, "sig": sig}))
                text = f"Found. Redirecting to {location}".encode()
                return _Response(302, {**common, "Location": location, "ETag": f'"{entry.blob_id}"',
                                       "X-Linked-Etag": f'"{entry.sha256}"', "X-Linked-Size": str(entry.size),
                                       "Content-Type": "text/plain; charset=utf-8"}, text)
            data = repo.read(entry)
        return self._ranged(data, headers, {**common, "ETag": f'"{entry.blob_id}"',
                                            "Content-Type": "text/plain; charset=utf-8"})

    def _cdn(self, repo_type: str, repo_id: str, sha256: str, query: dict, headers: Any) -> _Response:
        sig = query.get("sig", [""])[0]
        if not hmac.compare_digest(sig, self._sign(repo_type, repo_id, sha256)):
            raise HubError(403, "hub stand-in: bad storage URL signature")
        with self._lock:
            repo = self._repos.get((repo_type, repo_id))
            if repo is None or sha256 not in repo.lfs_objects:
                raise HubError(404, "hub stand-in: no such LFS object")
            data = repo.lfs_objects[sha256]
        name = query.get("filename", [sha256])[0]
        return self._ranged(data, headers, {
            "ETag": f'"{sha256}"', "Content-Type": "application/octet-stream",
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}; filename=\"{name}\";",
        })


# ---------------------------------------------------------------------- pointing the client at the stand-in
# `huggingface_hub` (2.4.0) reads its environment at import time into module constants, and some modules copy
# those values again at import (`from ..constants import X`, module-level singletons, frozensets). Setting
# HF_ENDPOINT etc. after the first `import huggingface_hub` therefore has no effect unless these are patched too.
_CONSTANTS_REQUIRED = ("ENDPOINT", "HUGGINGFACE_CO_URL_TEMPLATE", "HF_HUB_CACHE", "HF_HUB_OFFLINE",
                       "HF_HUB_DISABLE_XET", "HF_HUB_DISABLE_TELEMETRY", "HF_HOME")


class ClientPatch:
    """Points the (possibly already imported) ``huggingface_hub`` client at ``endpoint`` with a private
    ``hf_home``; ``undo()`` restores every env var and attribute it touched. Use through ``hub_client``."""

    def __init__(self, endpoint: str, hf_home: str | os.PathLike, *, token: str | None = DEFAULT_TOKEN,
                 offline: bool = False):
        self.endpoint = endpoint.rstrip("/")
        self.hf_home = Path(hf_home)
        self.cache_dir = self.hf_home / "hub"
        self.token = token
        self._saved_env: dict[str, str | None] = {}
        self._saved_attrs: list[tuple[Any, str, Any]] = []
        self._offline = offline
        self._applied = False

    def _setenv(self, key: str, value: str | None) -> None:
        if key not in self._saved_env:
            self._saved_env[key] = os.environ.get(key)
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value

    def _setattr(self, obj: Any, name: str, value: Any) -> None:
        if not any(o is obj and n == name for o, n, _ in self._saved_attrs):
            self._saved_attrs.append((obj, name, getattr(obj, name)))
        setattr(obj, name, value)

    def apply(self) -> ClientPatch:
        home = str(self.hf_home)
        self.hf_home.mkdir(parents=True, exist_ok=True)
        env = {
            "HF_ENDPOINT": self.endpoint, "HF_TOKEN": self.token, "HF_HUB_DISABLE_XET": "1", "HF_HOME": home,
            "HF_HUB_CACHE": str(self.cache_dir), "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_OFFLINE": "1" if self._offline else "0",
            # would otherwise win over / redirect the values above
            "HUGGING_FACE_HUB_TOKEN": None, "HF_OIDC_RESOURCE": None, "TRANSFORMERS_OFFLINE": None,
            "HUGGINGFACE_CO_STAGING": None, "HUGGINGFACE_HUB_CACHE": None, "HUGGINGFACE_ASSETS_CACHE": None,
            "HF_ASSETS_CACHE": None, "HF_XET_CACHE": None, "HF_TOKEN_PATH": None,
        }
        for key, value in env.items():
            self._setenv(key, value)

        constants = importlib.import_module("huggingface_hub.constants")
        missing = [name for name in _CONSTANTS_REQUIRED if not hasattr(constants, name)]
        if missing:
            raise RuntimeError(f"huggingface_hub.constants lacks {missing}: update tests/hub_server.py")
        host = urlsplit(self.endpoint).hostname or ""
        values = {
            "ENDPOINT": self.endpoint,
            "HUGGINGFACE_CO_URL_TEMPLATE": self.endpoint + "/{repo_id}/resolve/{revision}/{filename}",
            "HF_URL_HOSTS": frozenset({"hf.co", "huggingface.co", "hub-ci.huggingface.co", host}),
            "_staging_mode": False,
            "HF_HOME": home,
            "default_cache_path": str(self.cache_dir),
            "HUGGINGFACE_HUB_CACHE": str(self.cache_dir),
            "HF_HUB_CACHE": str(self.cache_dir),
            "default_assets_cache_path": os.path.join(home, "assets"),
            "HUGGINGFACE_ASSETS_CACHE": os.path.join(home, "assets"),
            "HF_ASSETS_CACHE": os.path.join(home, "assets"),
            "default_xet_cache_path": os.path.join(home, "xet"),
            "HF_XET_CACHE": os.path.join(home, "xet"),
            "HF_TOKEN_PATH": os.path.join(home, "token"),
            "HF_STORED_TOKENS_PATH": os.path.join(home, "stored_tokens"),
            "CHECK_FOR_UPDATE_DONE_PATH": os.path.join(home, ".check_for_update_done"),
            "CHECK_FOR_SKILL_UPDATE_DONE_PATH": os.path.join(home, ".check_for_skill_update_done"),
            "AGENT_HARNESSES_PATH": os.path.join(home, ".agent_harnesses.json"),
            "HF_HUB_OFFLINE": self._offline,
            "HF_HUB_DISABLE_XET": True,
            "HF_HUB_DISABLE_TELEMETRY": True,
        }
        for name, value in values.items():
            if hasattr(constants, name):
                self._setattr(constants, name, value)

        # Copies made at import time elsewhere.
        def module(name: str) -> Any:
            try:
                return importlib.import_module(name)
            except ImportError:
                return None

        hf_api = module("huggingface_hub.hf_api")
        if hf_api is not None and hasattr(hf_api, "api"):  # the singleton behind huggingface_hub.create_repo etc.
            self._setattr(hf_api.api, "endpoint", self.endpoint)
        http = module("huggingface_hub.utils._http")
        if http is not None and hasattr(http, "_HUB_ORIGINS") and hasattr(http, "_url_origin"):
            self._setattr(http, "_HUB_ORIGINS", frozenset(http._HUB_ORIGINS | {http._url_origin(self.endpoint)}))
        for mod_name, attr, value in (
            ("huggingface_hub.utils._cache_manager", "HF_HUB_CACHE", str(self.cache_dir)),
            ("huggingface_hub.utils._cache_assets", "HF_ASSETS_CACHE", os.path.join(home, "assets")),
            ("huggingface_hub.utils._git_credential", "ENDPOINT", self.endpoint),
        ):
            mod = module(mod_name)
            if mod is not None and hasattr(mod, attr):
                self._setattr(mod, attr, value)
        self._reset_client_state()
        self._applied = True
        return self

    def set_offline(self, offline: bool = True) -> None:
        """Switch ``HF_HUB_OFFLINE`` (env var and ``constants.HF_HUB_OFFLINE``) while applied."""
        constants = importlib.import_module("huggingface_hub.constants")
        self._offline = offline
        self._setenv("HF_HUB_OFFLINE", "1" if offline else "0")
        self._setattr(constants, "HF_HUB_OFFLINE", offline)

    @staticmethod
    def _reset_client_state() -> None:
        from huggingface_hub.utils import _http

        _http.close_session()  # pooled connections / a client built for another endpoint
        hf_uris = sys.modules.get("huggingface_hub.utils._hf_uris")
        if hf_uris is not None and hasattr(getattr(hf_uris, "parse_hf_uri", None), "cache_clear"):
            hf_uris.parse_hf_uri.cache_clear()

    def undo(self) -> None:
        if not self._applied:
            return
        for obj, name, value in reversed(self._saved_attrs):
            setattr(obj, name, value)
        self._saved_attrs.clear()
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env.clear()
        self._reset_client_state()
        self._applied = False

    def __enter__(self) -> ClientPatch:
        return self.apply()

    def __exit__(self, *exc: Any) -> None:
        self.undo()


def hub_client(endpoint: str, hf_home: str | os.PathLike, *, token: str | None = DEFAULT_TOKEN,
               offline: bool = False) -> ClientPatch:
    """Context manager pointing ``huggingface_hub`` at ``endpoint``, caching under ``hf_home``::

        with HubStandIn() as hub, hub_client(hub.endpoint, tmp_path / "hf") as client:
            huggingface_hub.hf_hub_download(...)   # talks to the stand-in, caches in tmp_path/hf/hub
            client.set_offline(True)               # HF_HUB_OFFLINE=1, also in huggingface_hub.constants
    """
    return ClientPatch(endpoint, hf_home, token=token, offline=offline)


@dataclass
class HubEnv:
    hub: HubStandIn
    client: ClientPatch

    @property
    def endpoint(self) -> str:
        return self.hub.endpoint

    @property
    def cache_dir(self) -> Path:
        return self.client.cache_dir


@pytest.fixture
def hub_env(tmp_path: Path) -> Iterator[HubEnv]:
    """A running stand-in with the client pointed at it and a fresh HF_HOME under ``tmp_path``.

    Import it into a test module (``from hub_server import hub_env``) to use it. Fails the test if the
    stand-in itself crashed while serving a request."""
    with HubStandIn() as hub, hub_client(hub.endpoint, tmp_path / "hf_home") as client:
        yield HubEnv(hub, client)
    assert not hub.server_errors, "hub stand-in crashed:\n" + "\n".join(hub.server_errors)
