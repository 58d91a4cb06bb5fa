"""What the Hub would refuse, said before asking it, and what a failed request means, in one line.

* :func:`check_names`: the repository ids ``--org`` and ``--prefix`` make, checked with
  huggingface_hub's own validator (:func:`huggingface_hub.utils.validate_repo_id`) before anything
  is read, rendered or sent.
* :func:`hub_failure`: a network failure, offline mode or an HTTP error of the Hub as a
  :class:`~draem_zoo.errors.DraemZooError` that names the endpoint (``HF_ENDPOINT``) and the fix,
  instead of the client's traceback; None for anything else (a bug keeps its traceback).
"""

from __future__ import annotations

from collections.abc import Iterable

from huggingface_hub import constants
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled
from huggingface_hub.utils import HFValidationError, validate_repo_id

from ..errors import DraemZooError


class HubUnreachable(DraemZooError):
    """The Hub could not be reached (network, proxy, HF_ENDPOINT, or HF_HUB_OFFLINE is set)."""


def _transport_errors() -> tuple[type[BaseException], ...]:
    found: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module, names in (("httpx2", ("TransportError",)), ("httpx", ("TransportError",)),
                          ("requests", ("ConnectionError", "Timeout"))):
        try:
            mod = __import__(module)
        except ImportError:
            continue
        found += [getattr(mod, n) for n in names if isinstance(getattr(mod, n, None), type)]
    return tuple(found)


TRANSPORT_ERRORS = _transport_errors()


def endpoint() -> str:
    """The Hub the client talks to (``HF_ENDPOINT``, https://huggingface.co by default)."""
    return str(constants.ENDPOINT).rstrip("/")


def _chain(exc: BaseException | None) -> Iterable[BaseException]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def network_cause(exc: BaseException) -> BaseException | None:
    """The connection or timeout error behind ``exc`` (itself included), if any."""
    return next((e for e in _chain(exc) if isinstance(e, TRANSPORT_ERRORS)), None)


def offline_mode() -> bool:
    """HF_HUB_OFFLINE is set (as the client read it)."""
    return bool(constants.HF_HUB_OFFLINE)


def offline(exc: BaseException) -> bool:
    """``exc`` was raised because HF_HUB_OFFLINE is set."""
    return any(isinstance(e, OfflineModeIsEnabled) for e in _chain(exc))


def _first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:200]}"


def unreachable_text(exc: BaseException) -> str | None:
    """"cannot reach the Hugging Face Hub at URL (HF_ENDPOINT) (ConnectError: ...)", or None when ``exc``
    is not a network failure."""
    cause = network_cause(exc)
    if cause is None:
        return None
    return f"cannot reach the Hugging Face Hub at {endpoint()} (HF_ENDPOINT) ({_first_line(cause)})"


def hub_failure(exc: BaseException, doing: str, after: str = "nothing was uploaded") -> DraemZooError | None:
    """``exc`` raised while ``doing`` (e.g. "publishing acme/x") as one line; None if it is not the Hub's fault."""
    if isinstance(exc, DraemZooError) and not isinstance(exc, HubUnreachable):  # said well already
        return exc
    if offline(exc):
        return HubUnreachable(f"{doing}: HF_HUB_OFFLINE is set, and this needs the Hub at {endpoint()}: unset "
                              f"HF_HUB_OFFLINE and run it again; {after}")
    text = unreachable_text(exc)
    if text:
        return HubUnreachable(f"{doing}: {text}: check the network connection, proxy and HF_ENDPOINT, then run it "
                              f"again; {after}")
    if isinstance(exc, HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", None)
        hint = ("check that the token (HF_TOKEN or `hf auth login`) may write there" if status in (401, 403)
                else "try again later" if status and status >= 500 else "check the names and the token")
        return DraemZooError(f"{doing}: the Hub at {endpoint()} answered {status or '?'} ({_first_line(exc)}): "
                             f"{hint}; {after}")
    return None


def check_repo_id(repo_id: str, flag: str) -> str:
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise DraemZooError(f"{flag}: the Hub refuses the repository id {repo_id!r} ({exc}); use letters, digits, "
                            "'-', '_' and '.' (no '--' or '..', not first or last), at most 96 characters "
                            "for the organisation and for the name") from None
    return repo_id


def check_names(org: str, prefix: str, categories: Iterable[str] = ()) -> list[str]:
    """The repository ids ``org/prefix-<category>`` (and the index's), refused with the flag at fault."""
    if not org or not isinstance(org, str) or "/" in org:
        raise DraemZooError(f"--org {org!r}: give the Hub user or organisation name, e.g. --org acme")
    check_repo_id(f"{org}/x", f"--org {org!r}")
    check_repo_id(f"{org}/{prefix}-index", f"--prefix {prefix!r}")
    return [check_repo_id(f"{org}/{prefix}-{cat}", f"--prefix {prefix!r} with category {cat!r}")
            for cat in categories]
