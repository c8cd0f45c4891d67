"""Routing rules: schema, validation and a pure matcher.

A rule file is an ordered list; every rule whose `when` holds fires. Rules are data:
each test is a mapping from operator to argument, compiled once at load time.

Semantics (also in the README):
- a plain value means equals: strings compare case-insensitively, numbers numerically;
- for a multi-valued attribute (e.g. ImageType) equals, `in`, `min` and `max` hold when
  any value satisfies them, `regex` searches the values joined with a backslash;
- an attribute the series lacks fails every test except `absent: true` (and a `not`
  around a failing test, which holds);
- a sequence's value is its number of items;
- several operators in one mapping must all hold; `any` takes a list of condition maps
  and holds when one of them does; `not` negates a test or, at the top of `when`,
  a whole condition map.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydicom import Dataset
from pydicom.datadict import keyword_dict
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

from dicomnode.config import GENERATOR_NAMES
from dicomnode.errors import RuleError

CALLING_AE = "CallingAETitle"
ORIGIN = "origin"

Attributes = Mapping[str, Any]
Test = Callable[[Any], bool]

_RULE_KEYS = {"name", "when", "run", "params", "send_to", "forward_to"}
_OPERATORS = {"equals", "in", "regex", "absent", "present", "min", "max", "not"}


@dataclass(frozen=True)
class Rule:
    name: str
    condition: Callable[[Attributes], bool] = field(repr=False, compare=False)
    forward_to: tuple[str, ...] = ()
    run: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    send_to: tuple[str, ...] = ()


@dataclass(frozen=True)
class Route:
    """What one matching rule asks for a series."""

    rule: str
    forward_to: tuple[str, ...]
    run: str | None
    params: Mapping[str, Any]
    send_to: tuple[str, ...]


def match(attributes: Attributes, rules: Iterable[Rule]) -> list[Route]:
    """The routes of every rule that holds for these series-level attributes, in file order."""
    return [
        Route(r.name, r.forward_to, r.run, r.params, r.send_to)
        for r in rules
        if r.condition(attributes)
    ]


# -- loading and validation --------------------------------------------------------------


def load_rules(path: Path, destinations: Iterable[str]) -> list[Rule]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RuleError(f"cannot read rule file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise RuleError(f"rule file {path} is not valid YAML: {exc}") from exc
    return parse_rules(raw, destinations, source=str(path))


def parse_rules(raw: Any, destinations: Iterable[str], source: str = "rules") -> list[Rule]:
    known_destinations = set(destinations) | {ORIGIN}
    if raw is None:
        return []
    if not isinstance(raw, dict) or set(raw) - {"rules"}:
        raise RuleError(f"{source}: expected a mapping with one key, 'rules'")
    items = raw.get("rules") or []
    if not isinstance(items, list):
        raise RuleError(f"{source}: 'rules' must be a list")
    rules: list[Rule] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        rule = _parse_rule(item, i, known_destinations, source)
        if rule.name in seen:
            raise RuleError(f"{source}: rule '{rule.name}': name used twice")
        seen.add(rule.name)
        rules.append(rule)
    return rules


def _parse_rule(item: Any, i: int, destinations: set[str], source: str) -> Rule:
    if not isinstance(item, dict):
        raise RuleError(f"{source}: rule #{i + 1}: expected a mapping")
    name = item.get("name")
    if not isinstance(name, str) or not name.strip():
        raise RuleError(f"{source}: rule #{i + 1}: 'name' is required")
    where = f"{source}: rule '{name}'"
    for key in item:
        if key not in _RULE_KEYS:
            raise RuleError(f"{where}: unknown key '{key}' (known: {', '.join(sorted(_RULE_KEYS))})")
    if "when" not in item:
        raise RuleError(f"{where}: 'when' is required (use {{}} to match every series)")
    condition = _compile_condition_map(item["when"], f"{where}: when")
    has_run, has_forward = "run" in item, "forward_to" in item
    if has_run == has_forward:
        raise RuleError(f"{where}: exactly one of 'run' and 'forward_to' is required")
    if has_forward:
        for key in ("params", "send_to"):
            if key in item:
                raise RuleError(f"{where}: '{key}' goes with 'run', not with 'forward_to'")
        forward_to = _destinations(item["forward_to"], destinations, f"{where}: forward_to")
        return Rule(name, condition, forward_to=forward_to)
    generator = item["run"]
    if generator not in GENERATOR_NAMES:
        raise RuleError(f"{where}: run: unknown generator {generator!r} "
                        f"(known: {', '.join(GENERATOR_NAMES)})")
    params = item.get("params") or {}
    if not isinstance(params, dict):
        raise RuleError(f"{where}: params: expected a mapping")
    if "send_to" not in item:
        raise RuleError(f"{where}: 'send_to' is required with 'run'")
    send_to = _destinations(item["send_to"], destinations, f"{where}: send_to")
    return Rule(name, condition, run=generator, params=dict(params), send_to=send_to)


def _destinations(value: Any, known: set[str], where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise RuleError(f"{where}: expected a non-empty list of destination names")
    for name in value:
        if name not in known:
            raise RuleError(f"{where}: unknown destination {name!r} "
                            f"(configured: {', '.join(sorted(known))})")
    return tuple(value)


def _compile_condition_map(spec: Any, where: str) -> Callable[[Attributes], bool]:
    if not isinstance(spec, dict):
        raise RuleError(f"{where}: expected a mapping of attribute to test")
    checks = [_compile_condition(key, arg, where) for key, arg in spec.items()]
    return lambda attrs: all(c(attrs) for c in checks)


def _compile_condition(key: Any, arg: Any, where: str) -> Callable[[Attributes], bool]:
    if key == "any":
        if not isinstance(arg, list) or not arg:
            raise RuleError(f"{where}: any: expected a non-empty list of condition maps")
        options = [_compile_condition_map(a, f"{where}: any[{j}]") for j, a in enumerate(arg)]
        return lambda attrs: any(o(attrs) for o in options)
    if key == "not":
        inner = _compile_condition_map(arg, f"{where}: not")
        return lambda attrs: not inner(attrs)
    if not isinstance(key, str) or (key not in keyword_dict and key != CALLING_AE):
        raise RuleError(f"{where}: {key!r} is not a DICOM attribute keyword")
    test = _compile_test(arg, f"{where}: {key}")
    return lambda attrs: test(attrs.get(key))


def _compile_test(spec: Any, where: str) -> Test:
    if isinstance(spec, list):
        raise RuleError(f"{where}: a plain list is ambiguous; write {{in: [...]}}")
    if not isinstance(spec, dict):
        return _compile_op("equals", spec, where)
    if not spec:
        raise RuleError(f"{where}: empty test")
    tests = [_compile_op(op, arg, where) for op, arg in spec.items()]
    return lambda value: all(t(value) for t in tests)


def _compile_op(op: Any, arg: Any, where: str) -> Test:
    if op not in _OPERATORS:
        raise RuleError(f"{where}: unknown operator {op!r} (known: {', '.join(sorted(_OPERATORS))})")
    if op == "not":
        inner = _compile_test(arg, f"{where}: not")
        return lambda value: not inner(value)
    if op in ("absent", "present"):
        if not isinstance(arg, bool):
            raise RuleError(f"{where}: {op}: expected true or false")
        want_absent = arg if op == "absent" else not arg
        return lambda value: _is_absent(value) == want_absent
    if op == "regex":
        if not isinstance(arg, str):
            raise RuleError(f"{where}: regex: expected a string")
        try:
            pattern = re.compile(arg)
        except re.error as exc:
            raise RuleError(f"{where}: regex: invalid pattern: {exc}") from exc
        return lambda value: not _is_absent(value) and pattern.search(_text(value)) is not None
    if op in ("min", "max"):
        if isinstance(arg, bool) or not isinstance(arg, int | float):
            raise RuleError(f"{where}: {op}: expected a number")
        bound = float(arg)
        if op == "min":
            return lambda value: any(n >= bound for n in _numbers(value))
        return lambda value: any(n <= bound for n in _numbers(value))
    options = arg if op == "in" else [arg]
    if op == "in" and (not isinstance(arg, list) or not arg):
        raise RuleError(f"{where}: in: expected a non-empty list")
    for option in options:
        if isinstance(option, dict | list) or option is None:
            raise RuleError(f"{where}: {op}: expected plain values, got {option!r}")
    return lambda value: not _is_absent(value) and any(_equals(v, o) for v in _values(value)
                                                      for o in options)


def _is_absent(value: Any) -> bool:
    return value is None or value == "" or value == []


def _values(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def _text(value: Any) -> str:
    return "\\".join(str(v) for v in _values(value))


def _numbers(value: Any) -> list[float]:
    out = []
    for v in [] if _is_absent(value) else _values(value):
        try:
            out.append(float(v))
        except (TypeError, ValueError):
            continue
    return out


def _equals(value: Any, expected: Any) -> bool:
    if isinstance(expected, bool):
        return value is expected
    if isinstance(expected, int | float):
        try:
            return float(value) == float(expected)
        except (TypeError, ValueError):
            return False
    return str(value).strip().casefold() == str(expected).strip().casefold()


# -- the attributes rules see -----------------------------------------------------------


def series_attributes(ds: Dataset, calling_ae: str) -> dict[str, Any]:
    """Top-level attributes of a series' instance as plain Python values.

    A sequence's value is its number of items (an empty one is absent): rules can ask whether
    one is there, as enhanced CT states its contrast agent in ContrastBolusAgentSequence.
    """
    attrs: dict[str, Any] = {}
    for elem in ds:
        if elem.keyword and elem.VR == "SQ":
            if len(elem.value):
                attrs[elem.keyword] = len(elem.value)
            continue
        # Binary VRs start with O (OB, OW, "OB or OW" before pydicom resolves it); UN is opaque.
        if not elem.keyword or elem.VR == "UN" or elem.VR.startswith("O") or " or " in elem.VR:
            continue
        try:
            value = elem.value
        except Exception:  # a malformed value must not stop routing of the others
            continue
        attrs[elem.keyword] = _plain(value)
    attrs[CALLING_AE] = calling_ae
    return attrs


def _plain(value: Any) -> Any:
    if isinstance(value, MultiValue | list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, PersonName):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("latin-1", "replace")
    if isinstance(value, int | float | str) or value is None:
        return value
    return str(value)
