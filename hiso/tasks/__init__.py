"""Task registry: name -> Task class (each task declared in one module)."""

from __future__ import annotations

from .base import Task
from .quadratic import QuadraticTask

TASKS: dict[str, type[Task]] = {
    QuadraticTask.name: QuadraticTask,
}


def register(cls: type[Task]) -> type[Task]:
    TASKS[cls.name] = cls
    return cls
