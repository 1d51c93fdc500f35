"""Errors a user can act on, and finding one inside the wrappers Ray puts around it.

A ``UserError`` says what is wrong with the input, the config or the environment and how to fix it:
the CLI and ``jobs/*.py`` print its message alone and exit 2 (``--debug`` or ``VIDGEN_DEBUG=1`` shows
the traceback). Anything else is a bug or an outage and keeps its traceback.

    python -m vidgen_ray.cli train --preset gan-debug --set train.optim.lr=fast; echo "exit $?"
"""

from __future__ import annotations


class UserError(Exception):
    """Wrong input, config or environment; the message names the fix."""


def find_user_error(exc: BaseException | None) -> UserError | None:
    """The first ``UserError`` in ``exc`` or what it wraps: explicit causes, a Ray task error's cause,
    a Ray Train worker group's failures (and their traceback wrappers), a Train controller failure."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, UserError):
            return e
        failures = getattr(e, "worker_failures", None)  # ray.train WorkerGroupError
        if isinstance(failures, dict):
            todo.extend(failures[k] for k in sorted(failures))
        for attr in ("_base_exc", "controller_failure", "cause"):  # Train's wrappers, RayTaskError
            inner = getattr(e, attr, None)
            if isinstance(inner, BaseException):
                todo.append(inner)
        # __cause__ only ("raise ... from"): a bug raised while handling a user error is still a bug.
        todo.append(e.__cause__)
    return None
