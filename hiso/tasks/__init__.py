"""Task registry: name -> Task class (each task declared in one module)."""

from __future__ import annotations

from .base import Task
from .quadratic import QuadraticTask
from .digits import DigitsTask
from .lm import LMTask
from .synthetic_clf import SyntheticClfTask

TASKS: dict[str, type[Task]] = {
    QuadraticTask.name: QuadraticTask,
    DigitsTask.name: DigitsTask,
    LMTask.name: LMTask,
    SyntheticClfTask.name: SyntheticClfTask,
}


def register(cls: type[Task]) -> type[Task]:
    TASKS[cls.name] = cls
    return cls
