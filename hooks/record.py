"""`Record`: the base of the hook's value types, a NamedTuple that costs no import of `typing`.

Every container start waits for the hook, and importing `typing` costs it about 6 ms (dataclasses
more: `inspect`, `ast`), so the hook's records are named tuples built by this module. A class that
derives from `Record` is written as a `typing.NamedTuple` would be (annotated fields, defaults, methods
and properties); at run time it becomes a `collections.namedtuple` with those members, and mypy sees
a real `typing.NamedTuple` (under TYPE_CHECKING, whose branch never runs). With `from __future__ import
annotations` in the module that defines it, no annotation is evaluated.
"""

from __future__ import annotations

from collections import namedtuple

__all__ = ["Record"]

TYPE_CHECKING = False  # not typing's own: the point is not to import it

if TYPE_CHECKING:
    from typing import NamedTuple as Record
else:
    # What a namespace always has and no field may be named.
    _CLASS_KEYS = frozenset({"__annotations__", "__module__", "__qualname__", "__dict__", "__weakref__"})

    class _RecordType(type):
        def __new__(mcs, name: str, bases: tuple[type, ...], namespace: dict[str, object]) -> type:
            if not bases:  # Record itself
                return super().__new__(mcs, name, bases, namespace)
            fields = list(namespace.get("__annotations__", {}))
            with_default = [field for field in fields if field in namespace]
            if with_default != fields[len(fields) - len(with_default) :]:
                raise TypeError(f"{name}: a field without a default follows one with a default")
            made = namedtuple(
                name, fields, defaults=[namespace[field] for field in with_default],
                module=str(namespace.get("__module__")),
            )
            for key, value in namespace.items():
                if key not in _CLASS_KEYS and key not in fields:
                    setattr(made, key, value)  # methods, properties, the docstring
            made.__qualname__ = str(namespace.get("__qualname__", name))
            return made

    class Record(metaclass=_RecordType):
        """Derive from this as from typing.NamedTuple."""
