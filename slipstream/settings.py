"""One typed definition per setting, and everything derived from it.

A setting is a field of a `Settings` struct: its type, default, constraints and
description are written once, as `Annotated[int, setting("...", ge=1)] = 32`.
From those definitions this module derives, for any settings struct:

- validation of a value built in code (`Settings.__post_init__`), by the same
  constraints msgspec applies when it decodes a config file or environment;
- the leaf settings of a struct, nested structs included (`leaves`), each with
  its config key (`cpu.intra_op_threads`), flag (`--cpu.intra-op-threads`)
  and environment variable (`SLIPSTREAM_CPU__INTRA_OP_THREADS`);
- argparse flags (`add_flags`) and the overrides they and the environment give
  (`flag_overrides`, `env_overrides`), as nested mappings ready for
  `msgspec.convert`;
- a struct of the same settings, each optional (`optional_settings`), so that
  a request body can give any of them and say which it gave;
- the Markdown reference tables of docs/serving.md (`markdown_table`).
"""

from __future__ import annotations

import argparse
import functools
import inspect
import types
import typing
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import msgspec

ENV_PREFIX = "SLIPSTREAM_"
# Environment variables name nested settings with a double underscore
# (SLIPSTREAM_CPU__INTRA_OP_THREADS), since single underscores are part of names.
ENV_NESTING = "__"
# Where argparse keeps a flag's value: the dotted path after this prefix.
FLAG_DEST_PREFIX = "setting:"


# For optional numbers, whose constraints must sit inside the `| None`.
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]


def setting(description: str, **constraints: Any) -> msgspec.Meta:
    """A setting's documentation and constraints (msgspec.Meta's ge, gt, le, lt, min_length, ...)."""
    return msgspec.Meta(description=description, **constraints)


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every settings struct: values built in code are checked like decoded ones."""

    def __post_init__(self) -> None:
        for name, annotated in _annotations(type(self)).items():
            value = getattr(self, name)
            if isinstance(value, Settings):
                continue  # checked when it was built
            try:
                msgspec.convert(value, annotated)
            except msgspec.ValidationError as exc:
                raise ValueError(f"{name}: {exc}") from None


@functools.cache
def _annotations(struct_type: type[msgspec.Struct]) -> dict[str, Any]:
    hints = typing.get_type_hints(struct_type, include_extras=True)
    return {name: hints[name] for name in struct_type.__struct_fields__}


@dataclass(frozen=True)
class Leaf:
    """One setting of a struct, reached through nested settings structs by `path`."""

    path: tuple[str, ...]
    type: Any  # the annotation without its metadata
    default: Any
    description: str
    constraints: dict[str, Any]

    @property
    def key(self) -> str:
        """Its name in a config file, dotted through nested tables: `cpu.intra_op_threads`."""
        return ".".join(self.path)

    @property
    def flag(self) -> str:
        return "--" + ".".join(part.replace("_", "-") for part in self.path)

    @property
    def env(self) -> str:
        return ENV_PREFIX + ENV_NESTING.join(self.path).upper()

    @property
    def is_list(self) -> bool:
        return any(get_origin(option) is list for option in _options(self.type))

    def type_text(self) -> str:
        return _type_text(self.type)

    def default_text(self) -> str:
        if self.default is None:
            return "unset"
        if isinstance(self.default, bool):
            return str(self.default).lower()
        if isinstance(self.default, list):
            return ",".join(str(value) for value in self.default)
        # Paths under the home directory read the same on every machine.
        return str(self.default).replace(str(Path.home()), "~", 1)

    def constraint_text(self) -> str:
        symbols = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<", "min_length": "length >="}
        return ", ".join(f"{symbols.get(k, k)} {v}" for k, v in self.constraints.items())


def _strip(annotated: Any) -> tuple[Any, list[msgspec.Meta]]:
    if get_origin(annotated) is typing.Annotated:
        base, *extras = get_args(annotated)
        return base, [m for m in extras if isinstance(m, msgspec.Meta)]
    return annotated, []


def _is_union(annotation: Any) -> bool:
    return get_origin(annotation) in (Union, types.UnionType)


def _options(annotation: Any) -> tuple[Any, ...]:
    if _is_union(annotation):
        return tuple(_strip(option)[0] for option in get_args(annotation))
    return (annotation,)


def _type_text(annotation: Any) -> str:
    options = [option for option in _options(annotation) if option is not type(None)]
    texts = []
    for option in options:
        origin = get_origin(option)
        if origin is Literal:
            texts.append(" \\| ".join(f"`{value}`" for value in get_args(option)))
        elif origin is list:
            texts.append(f"list of {_type_text(_strip(get_args(option)[0])[0])}")
        else:
            texts.append(getattr(option, "__name__", str(option)))
    return " or ".join(texts)


def _nested_struct(annotation: Any) -> type[Settings] | None:
    base, _ = _strip(annotation)
    return base if isinstance(base, type) and issubclass(base, Settings) else None


_CONSTRAINT_NAMES = ("ge", "gt", "le", "lt", "min_length", "max_length")


def leaves(struct_type: type[Settings], prefix: tuple[str, ...] = ()) -> Iterator[Leaf]:
    """Every leaf setting of `struct_type`, nested settings structs expanded, in definition order."""
    defaults = struct_type()
    nested: list[tuple[str, type[Settings]]] = []
    fields = _annotations(struct_type)
    # A struct's own settings first, then those it inherits (a group's, then its engine's).
    own = inspect.get_annotations(struct_type)
    ordered = [name for name in fields if name in own] + [name for name in fields if name not in own]
    for name in ordered:
        annotated = fields[name]
        inner = _nested_struct(annotated)
        if inner is not None:
            nested.append((name, inner))
            continue
        base, metas = _strip(annotated)
        description = " ".join(m.description for m in metas if m.description)
        # Constraints of an optional value sit on its non-None option.
        option_metas = [meta for option in get_args(base) for meta in _strip(option)[1]] if _is_union(base) else []
        constraints = {
            c: getattr(m, c) for m in [*metas, *option_metas] for c in _CONSTRAINT_NAMES if getattr(m, c) is not None
        }
        default = getattr(defaults, name)
        yield Leaf((*prefix, name), base, default, description, constraints)
    for name, inner in nested:
        yield from leaves(inner, (*prefix, name))


def optional_settings(
    struct_type: type[Settings],
    name: str,
    *,
    exclude: Iterable[str] = (),
    extra: Iterable[tuple[str, Any, Any]] = (),
) -> type[msgspec.Struct]:
    """A struct with `struct_type`'s settings (types, constraints, descriptions), each one optional.

    A field not given stays `msgspec.UNSET`, so `msgspec.to_builtins` of a decoded value holds
    only what was given, nested settings included: ready to merge over other settings. `extra`
    adds fields as `msgspec.defstruct` takes them; unknown fields are ignored (the caller names
    them, all at once).
    """
    excluded = set(exclude)
    fields: list[tuple[str, Any, Any]] = list(extra)
    for field_name, annotated in _annotations(struct_type).items():
        if field_name in excluded:
            continue
        inner = _nested_struct(annotated)
        if inner is not None:
            annotated = optional_settings(inner, name + inner.__name__)
        fields.append((field_name, annotated | msgspec.UnsetType, msgspec.UNSET))
    return msgspec.defstruct(name, fields, kw_only=True, module=struct_type.__module__)


def set_path(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for part in path[:-1]:
        tree = tree.setdefault(part, {})
    tree[path[-1]] = value


def deep_merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `overrides` applied, nested mappings merged key by key."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def text_value(leaf: Leaf, text: str) -> Any:
    """A flag's or variable's text as the setting's JSON-like value (msgspec converts the rest)."""
    if leaf.is_list:
        return [part.strip() for part in text.split(",") if part.strip()]
    if text.strip().lower() in ("", "none", "null") and type(None) in _options(leaf.type):
        return None
    return text


def env_overrides(selected: Iterable[Leaf], environ: Mapping[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for leaf in selected:
        if leaf.env in environ:
            set_path(tree, leaf.path, text_value(leaf, environ[leaf.env]))
    return tree


def _metavar(leaf: Leaf) -> str:
    option = next(o for o in _options(leaf.type) if o is not type(None))
    if get_origin(option) is Literal:
        return "{" + ",".join(map(str, get_args(option))) + "}"
    if get_origin(option) is list:
        return "N,N,..."
    return getattr(option, "__name__", "VALUE").upper()


def add_flags(parser: argparse._ActionsContainer, selected: Iterable[Leaf], *, env: bool = True) -> None:
    """One `--dotted.name VALUE` flag per leaf; the help text is the setting's own."""
    for leaf in selected:
        metavar = _metavar(leaf)
        where = f"; env {leaf.env}" if env else ""
        parser.add_argument(
            leaf.flag,
            dest=FLAG_DEST_PREFIX + leaf.key,
            default=None,
            metavar=metavar,
            help=f"{leaf.description} [default: {leaf.default_text()}{where}]".replace("%", "%%"),
        )


def flag_overrides(selected: Iterable[Leaf], namespace: argparse.Namespace) -> dict[str, Any]:
    values = vars(namespace)
    tree: dict[str, Any] = {}
    for leaf in selected:
        text = values.get(FLAG_DEST_PREFIX + leaf.key)
        if text is not None:
            set_path(tree, leaf.path, text_value(leaf, str(text)))
    return tree


def markdown_table(
    selected: Iterable[Leaf], *, flags: Mapping[str, str] | None = None, env_aliases: Mapping[str, str] | None = None
) -> str:
    """The reference table of some settings: key, flag, environment variable, type, default, meaning.

    `flags` replaces a setting's flag text (by key); `env_aliases` adds another variable that sets it.
    """
    rows = [
        "| setting | flag / environment | type | default | description |",
        "|---|---|---|---|---|",
    ]
    aliases = {key: f"<br>`{alias}`" for alias, key in (env_aliases or {}).items()}
    for leaf in selected:
        kind = leaf.type_text() + (f" ({leaf.constraint_text()})" if leaf.constraints else "")
        flag = (flags or {}).get(leaf.key, f"`{leaf.flag}`")
        description = leaf.description.replace("|", "\\|")
        rows.append(
            f"| `{leaf.key}` | {flag}<br>`{leaf.env}`{aliases.get(leaf.key, '')} "
            f"| {kind} | `{leaf.default_text()}` | {description} |"
        )
    return "\n".join(rows)
