"""Head registry (a leaf: it imports no head): a kind maps to its class, the tasks it supports and its role.

Each head module registers its class once with :func:`register_head` when imported; classify.factory imports
every head module and builds heads (`make_head`), as extract.registry / extract.factory do for extractors and
timm's ``_registry`` / ``_factory`` for models.

Roles: ``learned`` (fitted on features; `--features <set>` applies to it), ``rule`` (pre-trained outputs, little or
nothing learned), ``blend`` (fitted on the members' scores) and ``wrapper`` (wraps another head; the run builds it,
e.g. k-fold, it is not named in `--heads`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, TypeVar

from features.errors import InputError

ALL_TASKS = ("va", "expr", "au")
ROLES = ("learned", "rule", "blend", "wrapper")
T = TypeVar("T", bound=type)


@dataclass(frozen=True)
class HeadKind:
    kind: str
    cls: type
    tasks: tuple[str, ...]       # task names the kind is made for
    role: str
    title: str                   # how one-line errors name it ("the polarity gate is for --task va")
    member: str | None = None    # a composite built from the run's options bags heads of this kind

    def supports(self, task_name: str) -> bool:
        return task_name in self.tasks

    def check_task(self, task_name: str) -> None:
        """One line when the kind is not made for the task (every way of building or fitting a head says it)."""
        if not self.supports(task_name):
            raise InputError(f"the {self.title} is for the {' / '.join(t.upper() for t in self.tasks)} task, "
                             f"not {task_name}")


_REGISTRY: dict[str, HeadKind] = {}


def register_head(kind: str, *, tasks: tuple[str, ...] = ALL_TASKS, role: str = "learned",
                  title: str | None = None, member: str | None = None) -> Callable[[T], T]:
    """Class decorator: ``@register_head("polarity", tasks=("va",), title="polarity gate") class ...``; sets the
    class's `kind`."""
    if role not in ROLES:
        raise ValueError(f"head {kind!r}: role must be one of {ROLES}, got {role!r}")
    if not tasks or set(tasks) - set(ALL_TASKS):
        raise ValueError(f"head {kind!r}: tasks must be among {ALL_TASKS}, got {tasks!r}")

    def deco(cls: T) -> T:
        old = _REGISTRY.get(kind)
        if old is not None and (old.cls.__module__, old.cls.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(f"head kind {kind!r} registered twice ({old.cls.__qualname__}, {cls.__qualname__})")
        cls.kind = kind
        _REGISTRY[kind] = HeadKind(kind, cls, tuple(tasks), role, title or f"{kind} head", member)
        return cls
    return deco


def entry(kind: object, where=None) -> HeadKind:
    """The registered kind (head modules must be imported: classify.factory does it)."""
    if not isinstance(kind, str):
        raise InputError(f"a head kind is a name, got {kind!r}", where)
    if kind not in _REGISTRY:
        raise InputError(f"unknown head kind {kind!r} (known: {', '.join(_REGISTRY)})", where)
    return _REGISTRY[kind]


def registered(cls: type) -> HeadKind | None:
    """The entry of a head class, or None for a class that is not registered (a base class, a test's own)."""
    e = _REGISTRY.get(getattr(cls, "kind", None))
    return e if e is not None and e.cls is cls else None


def kinds(role: str | tuple[str, ...] | None = None, task: str | None = None) -> list[str]:
    """Registered kinds, in registration order; only those of `role` (one or several) / supporting `task`."""
    roles = (role,) if isinstance(role, str) else role
    return [k for k, e in _REGISTRY.items() if (roles is None or e.role in roles)
            and (task is None or e.supports(task))]
