"""Import trio and httpx (with httpcore) without two start-up costs that buy rl nothing.

Every `rl pull` pays for these imports, and issue 5 asks for a small pull in 0.7x podman's
time, so importing this module first (rootless.registry.client does) skips:

- `ldconfig -p`: trio names its worker threads with pthread_setname_np, which it looks up with
  `ctypes.util.find_library("pthread")`; on Linux that runs `/sbin/ldconfig -p` and scans its
  output (a fork + exec, 10-30 ms). glibc >= 2.34 has the function in libc.so.6 itself (and on
  an older glibc the lookup simply finds nothing there: trio then leaves threads unnamed).
- anyio: httpcore imports it at import time for asyncio; rl drives httpcore from trio only, so
  anyio is kept out while httpcore loads (~15 ms). Its absence is undone afterwards: anything
  that imports anyio later gets it as usual.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable


def _glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") is not None
    except (ValueError, OSError):
        return False


def libc_first(original: Callable[[str], str | None]) -> Callable[[str], str | None]:
    """A find_library that answers "pthread" and "c" with glibc's soname without ldconfig."""

    def find_library(name: str) -> str | None:
        if name in ("pthread", "c"):
            return "libc.so.6"
        return original(name)

    return find_library


def load() -> None:
    """Import trio, httpx and httpcore (once; later calls cost nothing)."""
    if "httpcore" in sys.modules and "trio" in sys.modules:
        return
    import ctypes.util

    original = ctypes.util.find_library
    patched = sys.platform == "linux" and "trio" not in sys.modules and _glibc()
    if patched:
        setattr(ctypes.util, "find_library", libc_first(original))  # noqa: B010  (mypy: name=)
    keep_out_anyio = "anyio" not in sys.modules
    if keep_out_anyio:
        sys.modules["anyio"] = None  # type: ignore[assignment]  # `import anyio` fails
    try:
        import httpcore  # noqa: F401  (httpx imports it lazily, with the first client)
        import httpx  # noqa: F401
        import trio  # noqa: F401
    finally:
        if patched:
            ctypes.util.find_library = original
        if keep_out_anyio and sys.modules.get("anyio", False) is None:
            del sys.modules["anyio"]


load()
