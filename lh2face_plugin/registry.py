"""Name -> factory registries for heads and input modules.

Built-in entries register themselves with :func:`register_head` /
:func:`register_input_module` when their module is imported. Third-party
packages add entries through the entry-point groups ``lh2face_plugin.heads``
and ``lh2face_plugin.input_modules``; an entry point names a factory (usually
an ``nn.Module`` subclass) and is loaded the first time a name is looked up.
"""
from __future__ import annotations

import difflib
import importlib
import inspect
import pkgutil
import warnings
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Callable, Dict, List, Optional

__all__ = ["Registry", "HEADS", "INPUT_MODULES", "register_head", "register_input_module"]


@dataclass
class Registry:
    """A registry of named factories backed by an entry-point group.

    Attributes:
        kind: what the entries are, used in error messages ("head").
        group: entry-point group third parties use.
        builtin_package: the package whose modules are imported before the first lookup
            so that built-in entries register themselves (every module in it is scanned:
            a new built-in is one new file).
    """

    kind: str
    group: str
    builtin_package: str = ""
    _entries: Dict[str, Callable[..., Any]] = field(default_factory=dict)
    _loaded: bool = False

    def register(self, name: str, factory: Optional[Callable[..., Any]] = None):
        """Register ``factory`` under ``name``; usable as a decorator."""

        def deco(obj):
            key = _canonical(name)
            if key in self._entries and self._entries[key] is not obj:
                raise ValueError(f"{self.kind} {name!r} is already registered by {self._entries[key]!r}")
            self._entries[key] = obj
            return obj

        return deco(factory) if factory is not None else deco

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for mod in builtin_modules(self.builtin_package):
            importlib.import_module(mod)
        builtins = dict(self._entries)
        for ep in entry_points(group=self.group):
            key = _canonical(ep.name)
            taken = key if key in self._entries else None
            if taken is not None:
                if ep.value.replace(" ", "") != _qualified_name(self._entries[taken]):
                    owner = f"the built-in {self.kind}" if taken in builtins else f"the earlier entry point"
                    warnings.warn(
                        f"{self.kind} entry point {ep.name!r} = {ep.value!r} (group {self.group!r}) has the name of "
                        f"{owner} {taken!r}, which wins; this entry point is ignored. Register it under another "
                        "name to use it.",
                        stacklevel=3,
                    )
                continue
            try:
                self._entries[key] = ep.load()
            except Exception as exc:  # a broken third-party plugin must not hide the built-ins
                self._entries[key] = _broken_entry(self.kind, ep.name, ep.value, exc)

    def holds(self, obj: Any) -> bool:
        """Whether ``obj`` is registered already (entry points are not loaded for this)."""
        return any(entry is obj for entry in self._entries.values())

    def names(self) -> List[str]:
        self._load()
        return sorted(self._entries)

    def get(self, name: str) -> Callable[..., Any]:
        self._load()
        if not isinstance(name, str):
            raise TypeError(f"{self.kind} name must be a str, got {type(name).__name__}")
        key = _canonical(name)
        if key in self._entries:
            return self._entries[key]
        close = difflib.get_close_matches(key, self._entries, n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise KeyError(
            f"unknown {self.kind} {name!r}.{hint} Known {self.kind}s: {', '.join(self.names())}. "
            f"Third-party {self.kind}s register through the entry-point group {self.group!r}."
        )

    def build(self, name: str, **kwargs: Any) -> Any:
        """Call the factory of ``name`` with ``kwargs``.

        Raises:
            TypeError: naming exactly the parameters the factory does not take (with the closest
                valid name for each), or what else keeps the call from binding.
        """
        factory = self.get(name)
        params = inspect.signature(factory).parameters
        takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
        named = [p for p, v in params.items() if v.kind in (v.POSITIONAL_OR_KEYWORD, v.KEYWORD_ONLY)]
        unknown = [] if takes_any else [k for k in kwargs if k not in named]
        if unknown:
            hints = []
            for k in unknown:
                close = difflib.get_close_matches(k, named, n=1)
                hints.append(f"{k!r} (did you mean {close[0]!r}?)" if close else repr(k))
            raise TypeError(
                f"{self.kind} {name!r} has no parameter{'s' if len(unknown) > 1 else ''} {', '.join(hints)}. "
                f"Its parameters: {describe_parameters(factory)}"
            )
        try:
            inspect.signature(factory).bind(**kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.kind} {name!r}: {exc}. Its parameters: {describe_parameters(factory)}") from None
        return factory(**kwargs)


def builtin_modules(package: str) -> List[str]:
    """The modules of ``package`` (not its private ones), sorted by name; a plain module is itself."""
    if not package:
        return []
    pkg = importlib.import_module(package)
    if not hasattr(pkg, "__path__"):
        return [package]
    return [f"{package}.{m.name}" for m in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name)
            if not m.name.startswith("_")]


def _canonical(name: str) -> str:
    """Names compare case-insensitively and with ``_`` and ``-`` alike (``MV_Softmax`` = ``mv-softmax``)."""
    return name.lower().replace("_", "-")


def describe_parameters(factory: Callable[..., Any]) -> str:
    """``'s=64.0, m=0.5'`` for a factory's keyword parameters and defaults."""
    parts = []
    for p in inspect.signature(factory).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        parts.append(p.name if p.default is p.empty else f"{p.name}={p.default!r}")
    return ", ".join(parts)


def _qualified_name(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '')}:{getattr(obj, '__qualname__', '')}"


def _broken_entry(kind: str, name: str, value: str, exc: Exception) -> Callable[..., Any]:
    def factory(**kwargs):
        raise ImportError(f"{kind} {name!r} from entry point {value!r} failed to load: {exc}") from exc

    return factory


HEADS = Registry(
    kind="head",
    group="lh2face_plugin.heads",
    builtin_package="lh2face_plugin.heads",
)
INPUT_MODULES = Registry(
    kind="input module",
    group="lh2face_plugin.input_modules",
    builtin_package="lh2face_plugin.render.module",
)


def register_head(name: str):
    """Decorator registering a head class under ``name``."""
    return HEADS.register(name)


def register_input_module(name: str):
    """Decorator registering an input-module class under ``name``."""
    return INPUT_MODULES.register(name)
