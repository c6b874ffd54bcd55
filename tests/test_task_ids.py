"""Fresh task ids are UUIDv7: unique, RFC 9562 shaped, and ordered by the millisecond they were made in."""

from __future__ import annotations

import time
import uuid

import pytest

from fleet.celery_app import FleetCelery
from fleet.messages import TaskMessages, derived_ids, new_task_id

pytestmark = pytest.mark.pure


def test_ids_are_version_7_and_unique() -> None:
    ids = [new_task_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    for text in ids[:100]:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)
        assert str(parsed) == text  # the canonical lowercase form Celery and the API show


def test_ids_carry_their_millisecond_and_sort_by_it() -> None:
    before = time.time_ns() // 1_000_000
    first = new_task_id()
    time.sleep(0.002)  # the next millisecond at least
    second = new_task_id()
    after = time.time_ns() // 1_000_000
    stamps = [uuid.UUID(text).int >> 80 for text in (first, second)]
    assert before <= stamps[0] < stamps[1] <= after
    assert first < second  # as text too: what a B-tree on the task id column compares


def test_the_builder_takes_a_fresh_v7_id_and_keeps_a_given_one(pure_app: FleetCelery) -> None:
    build = TaskMessages(pure_app)
    fresh = build("tasks.add", [1, 2], {}, {})
    assert uuid.UUID(fresh.task_id).version == 7
    assert fresh.message.properties["correlation_id"] == fresh.task_id
    derived = next(derived_ids("an idempotency key"))
    assert build("tasks.add", [1, 2], {}, {"task_id": derived}).task_id == derived
