"""What a frame's pickle may name: Thespian's messages, neverstop's, plain containers.

A pickle runs whatever callable it names (``find_class`` then REDUCE), so even a frame
with a valid signature (a host whose key was stolen) must not name ``os.system``. Only
classes are admitted, never functions, and only these:

- from ``actors.*``: any class (the pure core: messages, enums, states, behaviours; its
  constructors touch nothing outside the object);
- from ``real.*``: dataclasses and enums (neverstop's real-mode messages);
- from Thespian: its system messages and its address classes;
- a few builtins and standard types that messages hold.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import importlib
import pickle
from typing import Any

_STANDARD = {
    ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "bytearray"), ("builtins", "complex"),
    ("builtins", "range"), ("builtins", "slice"), ("builtins", "object"),
    ("datetime", "timedelta"), ("datetime", "datetime"), ("datetime", "date"), ("datetime", "timezone"),
    ("collections", "deque"), ("collections", "OrderedDict"), ("random", "Random"),
    ("socket", "AddressFamily"), ("socket", "SocketKind"),  # in Thespian's addresses
    ("logging", "LogRecord"),  # to Thespian's logger process
    ("thespian.system.timing", "ExpirationTimer"),  # in an admin's status (the liveness probe)
}
_THESPIAN_MODULES = ("thespian.actors", "thespian.system.messages.", "thespian.system.transport",
                     "thespian.system.transport.IPBase", "thespian.system.addressManager",
                     "thespian.system.logdirector")
_extra_modules: set[str] = set()


class UnpicklingRefused(pickle.UnpicklingError):
    """The pickle names something that is not on the allow-list."""


def allow_module(module: str) -> None:
    """Admit the dataclasses and enums of ``module`` too (the lab's test build)."""
    _extra_modules.add(module)
    admitted.cache_clear()


def _thespian_ok(module: str, obj: type) -> bool:
    if not any(module == m or (m.endswith(".") and module.startswith(m)) for m in _THESPIAN_MODULES):
        return False
    from thespian.actors import ActorAddress, ActorSystemMessage
    from thespian.system.transport import ForwardMessage
    from thespian.system.transport.IPBase import IPActorAddress

    if issubclass(obj, ActorSystemMessage | ActorAddress | IPActorAddress | ForwardMessage):
        return True
    plain_message = not callable(getattr(obj, "receiveMessage", None))  # not an actor
    return plain_message and module.startswith("thespian.system.messages.")


@functools.lru_cache(maxsize=4096)  # the same few classes in every frame: look each up once
def admitted(module: str, name: str) -> type | None:
    """The class ``module.name`` if a frame may name it, else None."""
    if (module, name) in _STANDARD:
        return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]
    top = module.split(".")[0]
    if top not in ("actors", "real", "thespian") and module not in _extra_modules:
        return None
    if not name.isidentifier():
        return None
    try:
        obj = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None
    if not isinstance(obj, type) or obj.__module__ != module:
        return None
    if top == "actors":
        return obj
    if top == "thespian":
        return obj if _thespian_ok(module, obj) else None
    return obj if dataclasses.is_dataclass(obj) or issubclass(obj, enum.Enum) else None


class SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        obj = admitted(module, name)
        if obj is None:
            raise UnpicklingRefused(f"the pickle names {module}.{name}, which is not allowed")
        return obj
