"""A small base for value objects, in place of `dataclasses`.

Importing dataclasses pulls in inspect, ast, dis and tokenize (~1.9 MB PSS, measured), which the
per-container monitor hosting the stack cannot afford. Subclasses declare `__slots__` and an
`__init__` whose parameters are named like the slots; they get equality, hashing, a repr and
`replace()`. Instances are treated as immutable (nothing assigns to their fields after `__init__`).
"""

from __future__ import annotations

from operator import attrgetter

TYPE_CHECKING = False  # mypy treats this name as typing.TYPE_CHECKING; typing costs ~0.8 MB
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, Self


class Record:
    __slots__ = ()
    _fields: tuple[str, ...] = ()
    _values: Callable[[Any], Any] = staticmethod(lambda record: ())

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        fields: list[str] = []
        for klass in reversed(cls.__mro__):
            slots = klass.__dict__.get("__slots__", ())
            fields.extend((slots,) if isinstance(slots, str) else slots)
        cls._fields = tuple(fields)
        getter = attrgetter(*fields) if fields else None
        if len(fields) == 1 and getter is not None:
            single = getter
            cls._values = staticmethod(lambda record: (single(record),))
        elif getter is not None:
            cls._values = staticmethod(getter)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return bool(self._values(self) == self._values(other))

    def __hash__(self) -> int:
        return hash((type(self), self._values(self)))

    def __repr__(self) -> str:
        pairs = zip(self._fields, self._values(self), strict=True)
        inside = ", ".join(f"{name}={value!r}" for name, value in pairs)
        return f"{type(self).__name__}({inside})"

    def replace(self, **changes: Any) -> Self:
        """A copy with some fields changed (like dataclasses.replace)."""
        values = dict(zip(self._fields, self._values(self), strict=True))
        values.update(changes)
        return type(self)(**values)

    def as_dict(self) -> dict[str, Any]:
        return dict(zip(self._fields, self._values(self), strict=True))
