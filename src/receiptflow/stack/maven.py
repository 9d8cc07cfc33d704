"""What the embedded stack builds with Maven: a folder that appears whole or not at all.

The Kafka jars and the schema registry are both produced by Maven on first use into the cache dir.
Two processes (a test session and ``stack up``) may ask at once, and a run may die half-way, so
each build runs under a file lock into a fresh folder beside its target, gets a marker file last,
and only then replaces the target: a folder with its marker is always complete.
"""

from __future__ import annotations

import fcntl
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from ..errors import DependencyMissingError, StackError


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if needed): one process builds, the others wait."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def build_into(
    target: Path,
    args: Callable[[Path], Sequence[str]],
    *,
    what: str,
    produced: Callable[[Path], bool],
    marker: str,
    marker_text: Callable[[Path], str],
    hint: str,
    timeout: float,
) -> None:
    """Run ``mvn -q -B <args(folder)>`` into a fresh folder and move it to ``target`` when it finished.

    ``what`` completes "Maven did not … in time" in errors; ``produced(folder)`` says whether the run
    made what was wanted; ``marker`` (written with ``marker_text(folder)``) marks the folder complete.
    The caller holds :func:`file_lock` and checks first whether ``target`` is complete already.
    """
    mvn = shutil.which("mvn")
    if mvn is None:
        raise DependencyMissingError(hint)
    partial = Path(tempfile.mkdtemp(prefix=f"{target.name}.partial-", dir=target.parent))
    try:
        done = subprocess.run(
            [mvn, "-q", "-B", *args(partial)], capture_output=True, text=True, timeout=timeout, check=False, cwd=partial
        )
    except subprocess.TimeoutExpired as exc:
        shutil.rmtree(partial, ignore_errors=True)
        raise StackError(f"Maven did not {what} within {timeout:g}s") from exc
    except OSError as exc:
        shutil.rmtree(partial, ignore_errors=True)
        raise StackError(f"cannot run Maven ({mvn}): {exc}") from exc
    if done.returncode != 0 or not produced(partial):
        shutil.rmtree(partial, ignore_errors=True)
        raise StackError(
            f"Maven could not {what} (exit {done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )
    (partial / marker).write_text(marker_text(partial))
    partial.chmod(0o755)  # mkdtemp made it private; what Maven built is no secret
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)  # a crash mid-build never leaves a target that looks complete
