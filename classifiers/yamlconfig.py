"""YAML files validated by pydantic models, with one-line errors that name the file, the key and the fix.

Every user-authored file of the project (run configs, profiles, seed recipes, scenario grids, the taxonomy)
goes through here, so a typo reads the same everywhere: `FILE: unknown key 'a.b' (did you mean 'c'?)` or
`FILE: key 'a.b': expected an integer, got 'two'`. It lives in the leaf package so that every package can
use it without breaking the import arrows.
"""

from __future__ import annotations

import difflib
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar, get_args

import annotated_types
import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class ConfigFileError(ValueError):
    """A user-authored file that cannot be read or does not validate; the message is one line."""


_EXPECTED = {
    "int_parsing": "an integer",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_parsing": "a number",
    "float_type": "a number",
    "finite_number": "a finite number",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "path_type": "a path",
}


_BOUND_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}


def _expected(error: dict[str, Any], model: type[BaseModel]) -> str:
    kind = error.get("type", "")
    if kind in _EXPECTED:
        return _EXPECTED[kind]
    if kind == "literal_error":
        return f"one of {(error.get('ctx') or {}).get('expected')}"
    if kind in _BOUND_ERRORS:
        return _range(model, [str(part) for part in error.get("loc", ())]) or error.get("msg", "").replace(
            "Input should be ", "a value "
        )
    if kind == "missing":
        return "a value (the key is required)"
    return error.get("msg", kind)


def _number(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _range(model: type[BaseModel], loc: list[str]) -> str | None:
    """The whole range of a value with two bounds ('a value from 0 to 1'); None unless both are known.

    Why: `curate.fineweb.line_punct_thr=7` was reported as '<= 1' alone, leaving the user to guess the lower end.
    """
    low = high = None
    for rule in _rules_at(model, loc):
        if isinstance(rule, annotated_types.Ge):
            low = (">=", rule.ge)
        elif isinstance(rule, annotated_types.Gt):
            low = (">", rule.gt)
        elif isinstance(rule, annotated_types.Le):
            high = ("<=", rule.le)
        elif isinstance(rule, annotated_types.Lt):
            high = ("<", rule.lt)
    if low is None or high is None:
        return None
    if low[0] == ">=" and high[0] == "<=":
        return f"a value from {_number(low[1])} to {_number(high[1])}"
    return f"a value {low[0]} {_number(low[1])} and {high[0]} {_number(high[1])}"


def _rules_at(model: type[BaseModel], loc: list[str]) -> list[Any]:
    """The constraints (annotated_types Ge/Le/...) of the value at a pydantic error location in `model`.

    Follows nested models, list items and tuple positions (`top_n_grams.0.1`); [] where it cannot tell.
    """
    annotation: Any = model
    rules: list[Any] = []
    for part in loc:
        fields = getattr(annotation, "model_fields", None)
        if fields is not None:
            if part not in fields:
                return []
            annotation, rules = fields[part].annotation, list(fields[part].metadata)
            continue
        args = typing.get_args(annotation)
        if not part.isdigit() or not args:
            return []
        if typing.get_origin(annotation) is list:
            inner = args[0]
        elif typing.get_origin(annotation) is tuple and int(part) < len(args) and args[-1] is not Ellipsis:
            inner = args[int(part)]
        else:
            return []
        annotation, rules = inner, []
        if typing.get_origin(inner) is typing.Annotated:
            annotation, *extra = typing.get_args(inner)
            rules = [rule for item in extra for rule in getattr(item, "metadata", [item])]
    return rules


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation such as `Tier`, `list[Tier]` or `Tier | None`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _fields_at(model: type[BaseModel], loc: list[str]) -> list[str]:
    """Valid keys of the (nested) model that holds `loc[-1]`, for 'did you mean' hints."""
    parent: type[BaseModel] | None = model
    for part in loc[:-1]:
        if part.isdigit():  # a list index: same model
            continue
        field = parent.model_fields.get(part) if parent else None
        parent = _model_in(getattr(field, "annotation", None))
        if parent is None:
            return []
    return sorted(parent.model_fields) if parent else []


def did_you_mean(name: str, choices: Iterable[str], n: int = 1) -> str:
    """` (did you mean 'x'?)` for the closest of `choices` to a mistyped `name` (up to `n`, joined by 'or'), else ''.

    Every "unknown key / dimension / code" message of the project hints the same way."""
    close = difflib.get_close_matches(name, sorted(choices), n=n)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


def describe_error(error: dict[str, Any], model: type[BaseModel], source: str) -> str:
    """One pydantic error as `SOURCE: ...key...: expected ...`."""
    loc = [str(part) for part in error.get("loc", ())]
    key = ".".join(loc) or "(top level)"
    if error.get("type") == "extra_forbidden":
        valid = _fields_at(model, loc)
        hint = did_you_mean(loc[-1], valid) or (f" (expected one of: {', '.join(valid)})" if valid else "")
        return f"{source}: unknown key '{key}'{hint}"
    if error.get("type") == "value_error":
        message = error.get("msg", "").removeprefix("Value error, ")
        field, sep, rest = message.partition(": ")
        if not loc and sep and field.split(".")[0] in model.model_fields:
            key, message = field, rest  # a whole-model check that names its key ("tiers: ...")
        return f"{source}: key '{key}': {message}"
    got = error.get("input")
    got_text = "" if isinstance(got, dict) else f", got {got!r}"
    return f"{source}: key '{key}': expected {_expected(error, model)}{got_text}"


def describe_validation(exc: ValidationError, model: type[BaseModel], source: str) -> str:
    """The first error of `exc`, plus how many more there are."""
    # an unknown key explains the 'missing' error a typo also causes, so it goes first
    errors = sorted(exc.errors(), key=lambda e: e.get("type") != "extra_forbidden")
    message = describe_error(errors[0], model, source)
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return message


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys; a config with two `curate:` sections then loses the first one's
    settings without a word. Every mapping here must name each key once."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults`: keys given here may override it
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                repeated = key in seen
                seen.add(key)
            except TypeError:  # a list or mapping as a key: PyYAML's own error says so, with the line
                break
            if repeated:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}' (each key may appear once)", key_node.start_mark
                )
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path, error: type[ConfigFileError] = ConfigFileError) -> dict[str, Any]:
    """A YAML mapping from `path`; errors name the file (and the line for syntax errors)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror})") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}:" if mark else ""
        raise error(f"{path}:{where} invalid YAML ({getattr(exc, 'problem', None) or exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise error(f"{path}: expected a mapping of keys at the top level, got {type(data).__name__}")
    return data


def validate(
    data: dict[str, Any], model: type[M], source: str, error: type[ConfigFileError] = ConfigFileError
) -> M:
    """`model.model_validate(data)` with a one-line error naming `source` and the key."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(describe_validation(exc, model, source)) from None


def load_model(
    path: str | Path,
    model: type[M],
    error: type[ConfigFileError] = ConfigFileError,
    defaults: dict[str, Any] | None = None,
) -> M:
    """Read `path` and validate it as `model`; `defaults` fill keys the file leaves out."""
    data = {**(defaults or {}), **read_yaml(path, error)}
    return validate(data, model, str(path), error)
