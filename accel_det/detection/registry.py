"""Registering into Detectron2's registries so that importing (or reloading) twice is harmless."""

from __future__ import annotations

from ..errors import AccelDetError


def register_once(registry, obj) -> None:
    """``registry.register(obj)`` unless the same object (same module and name) is there already;
    a re-imported one (``importlib.reload``) replaces it. A different object under the same name
    is an error."""
    name = obj.__name__
    if name in registry:
        existing = registry.get(name)
        if (
            getattr(existing, "__module__", None) == obj.__module__
            and existing.__qualname__ == obj.__qualname__
        ):
            registry._obj_map[name] = obj  # fvcore's Registry has no public way to replace
            return
        raise AccelDetError(
            f"{registry._name} already has a different {name!r} ({existing.__module__})"
        )
    registry.register(obj)
