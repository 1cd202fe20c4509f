"""YAML files and `--set a.b=c` overrides -> typed, validated configs.

Every stage owns a small pydantic model derived from `Config`. Loading reports every problem in
a file at once, each with file:line, the field path, and, for an unknown key, the closest valid
name.
"""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from specialize.errors import ConfigError, UserFileError

C = TypeVar("C", bound="Config")


class Config(BaseModel):
    """Base of every config: unknown keys are errors, fields are documented."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


def load_config(cls: type[C], path: str | Path, overrides: list[str] | None = None) -> C:
    """Return `cls` built from a YAML file plus `a.b=c` overrides; raise ConfigError listing all."""
    path = Path(path)
    text = read_text(path)
    try:
        raw = yaml.safe_load(text) or {}
        root_node = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError([f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})"]) from None
    if not isinstance(raw, dict):
        raise ConfigError([f"{path}:1: expected a mapping of keys at the top level"])
    return build_config(cls, raw, overrides, source=path, root_node=root_node)


def build_config(
    cls: type[C],
    raw: dict[str, Any],
    overrides: list[str] | None = None,
    *,
    source: str | Path | None = None,
    root_node: yaml.Node | None = None,
) -> C:
    """Return `cls` validated from a dict plus overrides; raise ConfigError with every problem."""
    data = apply_overrides(raw, overrides or [])
    override_paths = {tuple(o.split("=", 1)[0].split(".")) for o in overrides or []}
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        problems = [
            _describe(cls, err, source, root_node, override_paths)
            for err in exc.errors(include_url=False)
        ]
        raise ConfigError(problems, source=str(source) if source else None) from None


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of `raw` with each `a.b=c` set; values are parsed as YAML scalars.

    A number after a list's name is an index into it: `data.train.0=x` replaces the first item,
    `tasks.1.data=y` sets a field of the second; the index just past the end appends."""
    data = _deep_copy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError([f"--set {item!r}: expected KEY=VALUE, for example training.lr=1e-4"])
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        node: Any = data
        for depth, part in enumerate(parts[:-1]):
            fresh: Any = [] if parts[depth + 1].isdigit() else {}
            node = _child(node, part, fresh, key)
        _set(node, parts[-1], yaml.safe_load(value) if value.strip() else None, key)
    return data


def _child(node: Any, part: str, fresh: Any, key: str) -> Any:
    """Return node[part], creating `fresh` where it is missing or not a container."""
    if isinstance(node, list):
        index = _index(node, part, key)
        if index == len(node):
            node.append(fresh)
        elif not isinstance(node[index], dict | list):
            node[index] = fresh
        return node[index]
    child = node.get(part)
    if not isinstance(child, dict | list):
        child = fresh
        node[part] = child
    return child


def _set(node: Any, part: str, value: Any, key: str) -> None:
    if isinstance(node, list):
        index = _index(node, part, key)
        if index == len(node):
            node.append(value)
        else:
            node[index] = value
    else:
        node[part] = value


def _index(items: list, part: str, key: str) -> int:
    if not part.isdigit() or int(part) > len(items):
        raise ConfigError(
            [
                f"--set {key}: {part!r} is not an index of a list of {len(items)} item(s) "
                f"(use 0..{len(items)}, where {len(items)} appends)"
            ]
        )
    return int(part)


def locate(source: str | Path | None, field: str) -> str:
    """Return where a dotted field is in a YAML file: file:line when the key is there, else the
    file (or "config" for a config built in code)."""
    if source is None:
        return "config"
    path = Path(source)
    try:
        node = yaml.compose(path.read_text(encoding="utf-8")) if path.is_file() else None
    except yaml.YAMLError:
        node = None
    line = _line_of(node, tuple(field.split(".")))
    return f"{path}:{line}" if line else str(path)


def resolve_against(base: Path, value: str | None) -> str | None:
    """Return a relative path that exists under `base` made absolute; anything else (absolute
    paths, aliases, hub ids, missing files that a later stage names) as given."""
    if value is None:
        return None
    candidate = Path(value).expanduser()
    if candidate.is_absolute() or not (base / candidate).exists():
        return value
    return str((base / candidate).resolve())


def dump_config(config: Config) -> str:
    """Return the resolved config as YAML, in field order, for run directories."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def config_diff(config: Config) -> dict[str, tuple[Any, Any]]:
    """Return {dotted.path: (default, value)} for every field that differs from its default."""
    defaults = _defaults_of(type(config))
    diff: dict[str, tuple[Any, Any]] = {}
    _walk_diff(defaults, config.model_dump(mode="json"), "", diff)
    return diff


def where_in(path: str | Path, loc: tuple[str, ...]) -> str:
    """Return "file:line" of the deepest YAML node along `loc` in a config file (the file alone if
    the node is not there), for problems found after the file was validated."""
    try:
        node = yaml.compose(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        node = None
    line = _line_of(node, tuple(str(p) for p in loc))
    return f"{path}:{line}" if line else str(path)


def read_text(path: Path) -> str:
    """Return a UTF-8 file's text or raise UserFileError naming the file and the fix."""
    if not path.exists():
        raise UserFileError("file not found", where=str(path), fix="check the path")
    if path.is_dir():
        raise UserFileError("is a directory, expected a file", where=str(path))
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserFileError(
            f"not UTF-8 text (byte {exc.start})", where=str(path), fix="save it as UTF-8"
        ) from None
    except OSError as exc:
        raise UserFileError(f"cannot read ({exc.strerror})", where=str(path)) from None


def field_help(cls: type[Config], prefix: str = "") -> list[tuple[str, str, str]]:
    """Return (dotted name, default, help) for every field, nested configs expanded."""
    rows: list[tuple[str, str, str]] = []
    for name, info in cls.model_fields.items():
        sub = _config_class(info.annotation)
        if sub is not None:
            rows.extend(field_help(sub, f"{prefix}{name}."))
        else:
            default = (
                "" if info.is_required() else repr(info.get_default(call_default_factory=True))
            )
            rows.append((f"{prefix}{name}", default, info.description or ""))
    return rows


# --- error descriptions -------------------------------------------------------------------


def _describe(
    cls: type[Config],
    err: dict[str, Any],
    source: str | Path | None,
    root_node: yaml.Node | None,
    override_paths: set[tuple[str, ...]],
) -> str:
    loc = tuple(str(p) for p in err["loc"])
    field = ".".join(loc) or "(top level)"
    if loc in override_paths:
        where = f"--set {field}"
    else:
        line = _line_of(root_node, loc)
        where = f"{source}:{line}" if source and line else (str(source) if source else "config")
    if err["type"] == "extra_forbidden":
        known = _known_keys(cls, loc[:-1])
        close = difflib.get_close_matches(loc[-1], known, n=1, cutoff=0.5)
        hint = f"; did you mean {'.'.join(loc[:-1] + (close[0],))!r}?" if close else ""
        valid = f" (valid keys: {', '.join(sorted(known))})" if known and not close else ""
        return f"{where}: unknown key {field!r}{hint}{valid}"
    if err["type"] == "missing":
        return f"{where}: {field}: required field is missing"
    got = err.get("input")
    shown = f" (got {got!r})" if not isinstance(got, dict | list) else ""
    return f"{where}: {field}: {err['msg']}{shown}"


def line_of(node: yaml.Node | None, loc: tuple) -> int | None:
    """Return the 1-based line of the deepest YAML node along `loc` (for cross-field checks)."""
    return _line_of(node, tuple(str(p) for p in loc))


def _line_of(node: yaml.Node | None, loc: tuple[str, ...]) -> int | None:
    """Return the 1-based line of the deepest YAML node along `loc`."""
    line = None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((kv for kv in node.value if kv[0].value == part), None)
            if match is None:
                break
            line = match[0].start_mark.line + 1
            node = match[1]
        elif isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
            node = node.value[int(part)]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _known_keys(cls: type[BaseModel], loc: tuple[str, ...]) -> list[str]:
    current: Any = cls
    for part in loc:
        if part.isdigit() or _config_class(current) is None:
            current = _element_type(current)
            if part.isdigit():
                continue
        model = _config_class(current)
        if model is None or part not in model.model_fields:
            return []
        current = model.model_fields[part].annotation
    model = _config_class(current) or _config_class(_element_type(current))
    return list(model.model_fields) if model else []


def _config_class(annotation: Any) -> type[BaseModel] | None:
    """Return the BaseModel inside `X`, `X | None` or `Annotated[X, ...]`, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, typing.Annotated):
        for arg in typing.get_args(annotation):
            found = _config_class(arg)
            if found is not None:
                return found
    return None


def _element_type(annotation: Any) -> Any:
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (list, tuple) and args:
        return args[0]
    if typing.get_origin(annotation) is dict and len(args) == 2:
        return args[1]
    for arg in args:  # X | None where X is a container
        inner = _element_type(arg)
        if inner is not None:
            return inner
    return None


def _defaults_of(cls: type[BaseModel]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, info in cls.model_fields.items():
        sub = _config_class(info.annotation)
        if info.is_required():
            out[name] = _defaults_of(sub) if sub else None
        else:
            value = info.get_default(call_default_factory=True)
            out[name] = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
    return out


def _walk_diff(default: Any, value: Any, prefix: str, out: dict[str, tuple[Any, Any]]) -> None:
    if isinstance(default, dict) and isinstance(value, dict):
        for key in value:
            _walk_diff(default.get(key), value[key], f"{prefix}{key}.", out)
    elif default != value:
        out[prefix.rstrip(".")] = (default, value)


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value
