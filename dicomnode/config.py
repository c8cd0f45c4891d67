"""Typed configuration: load YAML once, validate every key, fill defaults.

Every key is optional. An unknown key or a value of the wrong type raises `ConfigError`
naming the dotted key (e.g. ``node.port``), so a typo never starts a node silently
misconfigured.
"""

from __future__ import annotations

import dataclasses
import re
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from dicomnode.errors import ConfigError

GENERATOR_NAMES = ("anomaly_triage", "contrast_synthesis", "vendor_harmonization")

_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # PS3.5 AE VR: no backslash, 16 max


@dataclass(frozen=True)
class Peer:
    ae_title: str
    host: str | None = None  # None: any host


@dataclass(frozen=True)
class NodeConfig:
    ae_title: str = "DICOMNODE"
    host: str = "127.0.0.1"
    port: int = 11112
    data_dir: Path = Path("./var")
    allowed_peers: list[Peer] = field(default_factory=list)
    max_associations: int = 32
    # Seconds of silence after which an idle association is aborted.
    network_timeout: float = 60.0
    # Largest PDU the node accepts; larger PDUs mean fewer round trips per instance.
    max_pdu_size: int = 262144
    # Stop accepting instances while less than this many MiB are free on the spool's disk.
    min_free_mb: int = 512
    # Days a series is kept after its last activity once all its work is delivered (and, while
    # less than twice min_free_mb is free, less); null keeps everything (store/retention.py).
    retention_days: float | None = 7.0


@dataclass(frozen=True)
class SeriesConfig:
    # Quiescence after the last instance before a series counts as complete.
    stable_seconds: float = 10.0
    # After the sending association is released, complete the series once no instance
    # has arrived for this long (shorter than stable_seconds). 0 disables the signal.
    release_grace_seconds: float = 2.0
    # How often the node looks for series that became complete.
    poll_seconds: float = 0.5


@dataclass(frozen=True)
class Destination:
    host: str
    port: int
    ae_title: str
    # The AE title the node presents; defaults to node.ae_title.
    calling_ae_title: str | None = None


@dataclass(frozen=True)
class OutboxConfig:
    # Exponential back-off for failed deliveries: first wait, then doubled up to the ceiling.
    retry_start_seconds: float = 5.0
    retry_max_seconds: float = 600.0
    # Seconds to wait for a destination to answer an association request or a C-STORE.
    timeout_seconds: float = 30.0


@dataclass(frozen=True)
class EnginesConfig:
    backend: Literal["auto", "tensorrt", "onnxruntime"] = "auto"
    models_dir: Path = Path("engines")
    load: Literal["startup", "first_use"] = "startup"
    batch_size: int = 8
    precision: Literal["fp16", "fp32"] = "fp16"
    intra_op_threads: int = 0  # 0: ONNX Runtime chooses


@dataclass(frozen=True)
class WebConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = None


@dataclass(frozen=True)
class Hl7Config:
    host: str
    port: int


@dataclass(frozen=True)
class WorklistConfig:
    viewer_url: str | None = None
    hl7: Hl7Config | None = None


@dataclass(frozen=True)
class Config:
    node: NodeConfig = field(default_factory=NodeConfig)
    series: SeriesConfig = field(default_factory=SeriesConfig)
    destinations: dict[str, Destination] = field(
        default_factory=lambda: {"pacs": Destination("127.0.0.1", 4242, "ORTHANC")}
    )
    outbox: OutboxConfig = field(default_factory=OutboxConfig)
    rules: Path = Path("rules/default.yaml")
    engines: EnginesConfig = field(default_factory=EnginesConfig)
    web: WebConfig = field(default_factory=WebConfig)
    worklist: WorklistConfig = field(default_factory=WorklistConfig)
    # Generator settings; a rule's params override these.
    anomaly_triage: dict[str, Any] = field(default_factory=dict)
    contrast_synthesis: dict[str, Any] = field(default_factory=dict)
    vendor_harmonization: dict[str, Any] = field(default_factory=dict)

    def generator_settings(self, name: str) -> dict[str, Any]:
        settings: dict[str, Any] = getattr(self, name)
        return settings


def load_config(path: Path | None) -> Config:
    """Load and validate a configuration file; None gives the embedded default.

    Relative paths in a file are taken relative to that file's folder; those of the
    embedded default relative to the working directory.
    """
    if path is None:
        return Config()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read configuration {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"configuration {path} is not valid YAML: {exc}") from exc
    if raw is None:
        raw = {}
    config = parse_config(raw)
    return _resolve_paths(config, path.parent, raw)


def parse_config(raw: Any) -> Config:
    config = _build(Config, raw, "")
    assert isinstance(config, Config)
    _check_semantics(config)
    return config


def _resolve_paths(config: Config, base: Path, raw: dict[str, Any]) -> Config:
    """Paths written in the file are relative to it; defaults stay relative to the working directory."""

    def resolve(p: Path, *keys: str) -> Path:
        section: Any = raw
        for key in keys:
            if not isinstance(section, dict) or key not in section:
                return p
            section = section[key]
        return p if p.is_absolute() else base / p

    return dataclasses.replace(
        config,
        node=dataclasses.replace(config.node, data_dir=resolve(config.node.data_dir, "node", "data_dir")),
        rules=resolve(config.rules, "rules"),
        engines=dataclasses.replace(
            config.engines, models_dir=resolve(config.engines.models_dir, "engines", "models_dir")
        ),
    )


def _check_semantics(config: Config) -> None:
    titles = [("node.ae_title", config.node.ae_title)]
    titles += [(f"node.allowed_peers[{i}].ae_title", p.ae_title)
               for i, p in enumerate(config.node.allowed_peers)]
    for name, dest in config.destinations.items():
        titles.append((f"destinations.{name}.ae_title", dest.ae_title))
        if dest.calling_ae_title is not None:
            titles.append((f"destinations.{name}.calling_ae_title", dest.calling_ae_title))
    for key, title in titles:
        if not _AE_TITLE.match(title) or not title.strip():
            raise ConfigError(f"{key}: {title!r} is not a valid AE title (1-16 characters, no backslash)")
    ports = [("node.port", config.node.port), ("web.port", config.web.port)]
    ports += [(f"destinations.{n}.port", d.port) for n, d in config.destinations.items()]
    for key, port in ports:
        if not 0 <= port <= 65535:
            raise ConfigError(f"{key}: {port} is not a TCP port (0-65535)")
    if "origin" in config.destinations:
        raise ConfigError("destinations.origin: 'origin' is reserved for the sender of a series")
    positive = {
        "series.stable_seconds": config.series.stable_seconds,
        "series.poll_seconds": config.series.poll_seconds,
        "outbox.retry_start_seconds": config.outbox.retry_start_seconds,
        "outbox.timeout_seconds": config.outbox.timeout_seconds,
        "engines.batch_size": config.engines.batch_size,
        "node.max_associations": config.node.max_associations,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{key}: must be greater than 0, got {value}")
    if config.outbox.retry_max_seconds < config.outbox.retry_start_seconds:
        raise ConfigError("outbox.retry_max_seconds: must not be below outbox.retry_start_seconds")
    if config.node.retention_days is not None and config.node.retention_days <= 0:
        raise ConfigError(f"node.retention_days: must be greater than 0 (or null to keep everything), "
                          f"got {config.node.retention_days:g}")
    if config.series.release_grace_seconds < 0:
        raise ConfigError("series.release_grace_seconds: must be 0 or more")


def _build(tp: Any, value: Any, key: str) -> Any:
    """Turn parsed YAML into `tp`, raising ConfigError that names `key` on any mismatch."""
    where = key or "configuration"
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        (inner,) = [o for o in options if o is not type(None)]
        return _build(inner, value, key)
    if origin is Literal:
        if value not in get_args(tp):
            allowed = ", ".join(str(a) for a in get_args(tp))
            raise ConfigError(f"{where}: {value!r} is not one of {allowed}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {_kind(value)}")
        (item,) = get_args(tp)
        return [_build(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {_kind(value)}")
        _, item = get_args(tp)
        return {str(k): _build(item, v, f"{key}.{k}" if key else str(k)) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return _build_dataclass(tp, value, key)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {_kind(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected a whole number, got {_kind(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {_kind(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {_kind(value)}")
        return value
    if tp is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}: expected a path, got {_kind(value)}")
        return Path(value)
    raise TypeError(f"unsupported configuration type {tp!r} at {where}")


def _build_dataclass(cls: Any, value: Any, key: str) -> Any:
    where = key or "configuration"
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {_kind(value)}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in value:
        if name not in fields:
            known = ", ".join(fields)
            raise ConfigError(f"{_join(key, str(name))}: unknown key (known keys: {known})")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name in value:
            kwargs[name] = _build(hints[name], value[name], _join(key, name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{_join(key, name)}: required key is missing")
    return cls(**kwargs)


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return f"{type(value).__name__} {value!r}"[:80]
