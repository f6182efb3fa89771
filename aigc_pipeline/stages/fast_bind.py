"""Binding call arguments to parameter names cheaply: the template sandbox measures the arguments
of a size-growing filter on every call, and `inspect.Signature.bind` (plus `apply_defaults`) cost
about 60 µs of a 200 µs render of the product_copy brief (benchmarks/README.md, "scale.py").
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_NOT_ITERATORS = frozenset({str, int, float, bool, list, tuple, dict, type(None)})  # skips the slow ABC check


_ITERATOR_TYPES: dict[type, bool] = {}  # other types seen, and whether they are iterators (ABC checks are slow)


def _iterator(value: Any) -> bool:
    kind = type(value)
    if kind in _NOT_ITERATORS:
        return False
    known = _ITERATOR_TYPES.get(kind)
    if known is None:
        known = isinstance(value, Iterator)
        if len(_ITERATOR_TYPES) < 256:  # (a template cannot make classes: the types are few)
            _ITERATOR_TYPES[kind] = known
    return known


class Binder:
    """`inspect.Signature.bind(*args, **kwargs)` + `apply_defaults()`, as a plain dict of arguments.

    Returns None whenever the call is anything but plain (an iterator among the arguments, a
    keyword that repeats a positional argument, a missing argument, too many): the caller then
    binds the slow way, which also raises the usual TypeError. So it never binds differently.
    """

    def __init__(self, signature: inspect.Signature) -> None:
        params = list(signature.parameters.values())
        self.names = [p.name for p in params if p.kind in _POSITIONAL]
        self.keyword_only = {p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}
        self.var_args = next((p.name for p in params if p.kind is inspect.Parameter.VAR_POSITIONAL), None)
        self.var_kwargs = next((p.name for p in params if p.kind is inspect.Parameter.VAR_KEYWORD), None)
        self.defaults: dict[str, Any] = {p.name: p.default for p in params if p.default is not p.empty}
        if self.var_args is not None:
            self.defaults[self.var_args] = ()
        if self.var_kwargs is not None:
            self.defaults[self.var_kwargs] = {}
        self.required = [name for name in [*self.names, *self.keyword_only] if name not in self.defaults]
        self.known = {*self.names, *self.keyword_only}

    def __call__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any] | None:
        names = self.names
        if len(args) > len(names) and self.var_args is None:
            return None
        for value in args:
            if _iterator(value):
                return None
        bound = dict(self.defaults)
        bound.update(zip(names, args, strict=False))  # the rest go to *args
        if self.var_args is not None:
            bound[self.var_args] = args[len(names):]
        if kwargs and not self._keywords(bound, kwargs, len(args)):
            return None
        for name in self.required:
            if name not in bound:
                return None
        return bound

    def _keywords(self, bound: dict[str, Any], kwargs: dict[str, Any], positional: int) -> bool:
        extra: dict[str, Any] = {}
        taken = set(self.names[:positional])
        for name, value in kwargs.items():
            if _iterator(value) or name in taken or name in (self.var_args, self.var_kwargs):
                return False
            if name in self.known:
                bound[name] = value
            elif self.var_kwargs is not None:
                extra[name] = value
            else:
                return False
        if self.var_kwargs is not None:
            bound[self.var_kwargs] = extra
        return True
