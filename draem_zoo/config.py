"""The config mechanism shared by every concern.

Each concern (model, synthesis, loss, training, data, scoring) has one dataclass in
its own module. This module turns those dataclasses into JSON and back (strictly:
unknown keys are errors), and applies ``key=value`` overrides typed by the
dataclass annotations. The same path serves CLI ``--set`` flags, search-space
suggestions and replaying the config of a best trial.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from .errors import ConfigError

# the dataset layouts read (draem_zoo.data.datasets), here so that the CLI's parser names them without torch
DATASET_CHOICES = ("auto", "mvtec", "visa", "mvtec_ad2", "dagm")

T = TypeVar("T")


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (nested) config dataclass; tuples become lists."""
    if not dataclasses.is_dataclass(cfg):
        raise TypeError(f"not a config dataclass: {cfg!r}")
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out[f.name] = to_dict(value)
        elif isinstance(value, tuple):
            out[f.name] = list(value)
        else:
            out[f.name] = value
    return out


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build ``cls`` from ``data``, checking every key and value type.

    ``where`` names the source (a file, a section) in error messages.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a JSON object, got {type(data).__name__}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(names))}"
        )
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = coerce(hints[name], value, f"{where}.{name}")
    return cls(**kwargs)


def coerce(tp: Any, value: Any, key: str) -> Any:
    """Check (and gently convert) a JSON value against a type annotation."""
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(arg, value, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{key}: {value!r} does not fit {_type_name(tp)}")
    if origin is Literal:
        if value not in get_args(tp):
            choices = ", ".join(repr(a) for a in get_args(tp))
            raise ConfigError(f"{key}: {value!r} is not one of {choices}")
        return value
    if origin is tuple:
        args = get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list for {_type_name(tp)}, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(args[0], v, key) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)} ({value!r})")
        return tuple(coerce(a, v, key) for a, v in zip(args, value))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if tp is typing.Any:
        return value
    raise TypeError(f"{key}: unsupported config type {tp!r}")


def parse_text(tp: Any, text: str, key: str) -> Any:
    """Parse a command-line value (``--set key=value``) for annotation ``tp``."""
    text = text.strip()
    if text.lower() in ("none", "null"):
        value: Any = None
    elif text.startswith(("[", "{", '"')):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{key}: {text!r} is not valid JSON ({exc})") from None
    else:
        value = _scalar(text)
        if _wants_sequence(tp) and isinstance(value, str) and "," in text:
            value = [_scalar(part) for part in text.split(",")]
        elif _wants_sequence(tp) and not isinstance(value, str):
            value = [value]
    if _accepts_str(tp) and not isinstance(value, str) and value is not None:
        # "--set model.disc_encoder=resnet18" must stay a string even if it looks numeric
        if not _accepts(tp, value):
            value = text
    return coerce(tp, value, key)


def _scalar(text: str) -> Any:
    low = text.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


def _accepts(tp: Any, value: Any) -> bool:
    try:
        coerce(tp, value, "")
        return True
    except (ConfigError, TypeError):
        return False


def _accepts_str(tp: Any) -> bool:
    if tp is str:
        return True
    if get_origin(tp) in (Union, types.UnionType):
        return any(_accepts_str(a) for a in get_args(tp))
    if get_origin(tp) is Literal:
        return any(isinstance(a, str) for a in get_args(tp))
    return False


def _wants_sequence(tp: Any) -> bool:
    if get_origin(tp) is tuple:
        return True
    if get_origin(tp) in (Union, types.UnionType):
        return any(_wants_sequence(a) for a in get_args(tp))
    return False


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def field_index(cls: type) -> dict[str, tuple[str, ...]]:
    """Every leaf key of a nested config class: ``"loss.ssim_weight" -> ("loss", "ssim_weight")``."""
    index: dict[str, tuple[str, ...]] = {}
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            for sub, path in field_index(tp).items():
                index[f"{f.name}.{sub}"] = (f.name, *path)
        else:
            index[f.name] = (f.name,)
    return index


def resolve_key(cls: type, key: str) -> tuple[str, ...]:
    """A dotted key, or an unambiguous leaf name, to its path in ``cls``."""
    index = field_index(cls)
    if key in index:
        return index[key]
    matches = [k for k in index if k.rsplit(".", 1)[-1] == key]
    if len(matches) == 1:
        return index[matches[0]]
    if matches:
        raise ConfigError(f"--set {key}: ambiguous, say which one of {', '.join(sorted(matches))}")
    close = [k for k in index if key.rsplit(".", 1)[-1] in k]
    hint = f"; did you mean {', '.join(sorted(close)[:5])}?" if close else ""
    raise ConfigError(f"--set {key}: unknown config key{hint} (`draem-zoo config` lists every key)")


def with_value(cfg: T, path: tuple[str, ...], value: Any) -> T:
    """A copy of ``cfg`` with the (already typed) value at ``path`` replaced."""
    if len(path) == 1:
        return dataclasses.replace(cfg, **{path[0]: value})
    child = getattr(cfg, path[0])
    return dataclasses.replace(cfg, **{path[0]: with_value(child, path[1:], value)})


def leaf_type(cls: type, path: tuple[str, ...]) -> Any:
    tp: Any = cls
    for name in path:
        tp = get_type_hints(tp)[name]
    return tp


def apply_overrides(cfg: T, overrides: dict[str, Any] | list[str]) -> T:
    """Apply ``key=value`` strings (CLI) or a ``{key: value}`` dict (search, replay)."""
    cls = type(cfg)
    items: list[tuple[str, Any, bool]] = []
    if isinstance(overrides, dict):
        items = [(k, v, False) for k, v in overrides.items()]
    else:
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"--set {item!r}: expected key=value, e.g. loss.ssim_weight=2.0")
            key, text = item.split("=", 1)
            items.append((key.strip(), text, True))
    for key, value, is_text in items:
        path = resolve_key(cls, key)
        tp = leaf_type(cls, path)
        dotted = ".".join(path)
        typed = parse_text(tp, value, dotted) if is_text else coerce(tp, value, dotted)
        cfg = with_value(cfg, path, typed)
    validate_all(cfg)
    return cfg


def validate_all(cfg: Any) -> None:
    """Call ``validate()`` on ``cfg`` and every nested config that has one."""
    for f in dataclasses.fields(cfg):
        child = getattr(cfg, f.name)
        if dataclasses.is_dataclass(child):
            validate_all(child)
    validate = getattr(cfg, "validate", None)
    if callable(validate):
        validate()


def save_json(cfg_or_dict: Any, path: str | Path) -> None:
    data = to_dict(cfg_or_dict) if dataclasses.is_dataclass(cfg_or_dict) else cfg_or_dict
    Path(path).write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def load_json(path: str | Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None
