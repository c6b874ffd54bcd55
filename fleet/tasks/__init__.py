"""fleet's task modules.

To add your team's tasks, put them in a module (``shared_task`` with an
explicit ``name``) and either append it to :data:`TASK_MODULES` or list it in
``FLEET_TASK_MODULES`` (comma separated). Routes go in ``routing.py``; a task
not listed there runs on the ``default`` pool.
"""

TASK_MODULES: tuple[str, ...] = (
    "fleet.tasks.email",
    "fleet.tasks.data",
    "fleet.tasks.reports",
    "fleet.tasks.reliable",
    "fleet.tasks.scheduled",
    "fleet.tasks.workflows",
    "fleet.tasks.examples",
    "fleet.tasks.imports",
    "fleet.tasks.practices",
)
