"""Hot reloading of a model artifact: the worker asks ``current()`` once per batch and gets the newest good model.

``ModelReloader(path)`` checks the file at most every ``check_every_s`` seconds
(of its ``clock``): a change of size, mtime or inode makes it read the file,
and a new SHA-256 makes it load it (``models.artifacts.load_model``: every
refusal applies). The swap is one attribute assignment, so a batch sees either
the old model or the new one, never a mix. A file that fails to load leaves
the previous model in place and is reported in ``last_error`` (and counted in
``failures``) until a good file replaces it; a missing file keeps the old
model too (an operator deleting the artifact does not silently drop
detection). ``current()`` returns ``None`` until a model has loaded once.

Writers should replace the file atomically (``save_model`` does: temporary
file, then ``os.replace``), so a half-written file is never seen.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from models.artifacts import ArtifactError, LoadedModel, load_model

__all__ = ["ModelReloader"]

Loader = Callable[[str], LoadedModel]


class ModelReloader:
    """Holds the newest model loaded from ``path`` (see the module docstring).

    Parameters
    ----------
    path: the artifact to follow.
    check_every_s: least time between two looks at the file.
    loader: loads and checks an artifact (default ``models.artifacts.load_model``).
    clock: monotonic seconds (injected in tests).
    """

    def __init__(self, path: str | os.PathLike[str], check_every_s: float = 5.0, loader: Loader = load_model,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = str(path)
        self.check_every_s = check_every_s
        self.loader = loader
        self.clock = clock
        self.loaded: LoadedModel | None = None
        self.last_error: str | None = None
        self.reloads = 0
        self.failures = 0
        self._stamp: tuple[int, int, int] | None = None
        self._next_check = float("-inf")

    def current(self) -> LoadedModel | None:
        """The model to score this batch with (looks at the file when ``check_every_s`` has passed)."""
        now = self.clock()
        if now >= self._next_check:
            self._next_check = now + self.check_every_s
            self.check()
        return self.loaded

    def check(self) -> bool:
        """Look at the file now; load it if it changed. True when a new model was swapped in."""
        try:
            st = os.stat(self.path)
        except OSError as exc:
            self.last_error = f"{self.path}: {exc.strerror or exc}"
            return False
        stamp = (st.st_size, st.st_mtime_ns, st.st_ino)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            model = self.loader(self.path)
        except ArtifactError as exc:
            self.last_error, self.failures = str(exc), self.failures + 1
            return False
        if self.loaded is not None and model.sha256 == self.loaded.sha256:
            return False
        self.loaded, self.last_error, self.reloads = model, None, self.reloads + 1
        return True

    def status(self) -> dict[str, object]:
        """What an operator or ``/metrics`` needs: the file, the model in force, reloads, failures, last error."""
        meta = self.loaded.meta if self.loaded is not None else None
        return {"path": str(Path(self.path)), "kind": meta.kind if meta else None, "sha256": self.loaded.sha256 if self.loaded else None,
                "created_at": meta.created_at if meta else None, "reloads": self.reloads, "failures": self.failures,
                "last_error": self.last_error}
