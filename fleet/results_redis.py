"""Celery's Redis result backend, each state written in one round trip.

Celery stores a state in two: a GET (decoded in the worker) to leave a stored
SUCCESS alone, then SET and PUBLISH in a pipeline. With ``task_track_started``
that is four round trips per task. Here one script does the same on the
server: it reads the stored status, and unless it is SUCCESS sets the value
(with Celery's expiry) and publishes it on the key's channel, as Celery does,
so ``AsyncResult.get()`` and ``on_message`` subscribers hear every state.
A threaded worker's duplicate check (fleet.worker.dedup) reads the stored
state through the same script as it stores STARTED (:meth:`claim_started`):
two round trips a task in all, as many as Celery's without STARTED.

Only JSON results without compression take the script (fleet's settings);
a value the script cannot read as JSON, or any other setting, takes Celery's
own path, which decodes or fails as it always did; so does every write after
the server refused a script (scripting denied by an ACL or a proxy).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from functools import cached_property, partial
from typing import Any

from celery import states
from celery.backends.redis import RedisBackend
from celery.exceptions import BackendStoreError
from kombu.utils.encoding import bytes_to_str
from redis.exceptions import ResponseError

logger = logging.getLogger("fleet.results")

#: KEYS[1] the task's key; ARGV[1] the encoded meta, ARGV[2] its expiry in seconds (0: none), ARGV[3..]
#: the statuses a stored value keeps (SUCCESS; a claim adds STARTED). Returns {1 stored, 0 left alone
#: or -1 the stored value is not JSON; the value stored before, '' for none}.
STORE_UNLESS = """
local current = redis.call('GET', KEYS[1])
if current then
  local ok, meta = pcall(cjson.decode, current)
  if not ok then return {-1, current} end
  if type(meta) == 'table' then
    for i = 3, #ARGV do
      if meta['status'] == ARGV[i] then return {0, current} end
    end
  end
end
if tonumber(ARGV[2]) > 0 then
  redis.call('SETEX', KEYS[1], ARGV[2], ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return {1, current or ''}
"""

#: the task id whose STARTED this thread already stored with its duplicate check (:meth:`claim_started`)
_claimed = threading.local()


class OneTripRedisBackend(RedisBackend):
    """``RedisBackend`` whose result writes are one server-side script call."""

    _scripts_refused = False

    @cached_property
    def _store_script(self) -> Any:
        return self.client.register_script(STORE_UNLESS)

    def _store_result(
        self, task_id: str, result: Any, state: str, traceback: str | None = None, request: Any = None, **kwargs: Any
    ) -> Any:
        if state == states.STARTED and getattr(_claimed, "task_id", None) == task_id:
            _claimed.task_id = None  # stored by claim_started, with the duplicate check's read
            return result
        stored = self._store_unless(task_id, result, state, traceback, request, (states.SUCCESS,))
        if stored is None:  # Celery's path, as it would go
            return super()._store_result(task_id, result, state, traceback, request, **kwargs)
        return result

    def claim_started(self, request: Any) -> tuple[str | None, int | None] | None:
        """The (status, retries) stored for the worker ``request`` about to run in this thread, and
        its STARTED stored in the same round trip unless SUCCESS or STARTED is: the duplicate check's
        read and Celery's STARTED write (fleet.worker.dedup), one call instead of two. Celery's own
        STARTED write for it in this thread is then skipped. None: not claimed (read it as Celery does).
        """
        context = request._context  # what Celery's trace stores STARTED with
        running = {"pid": os.getpid(), "hostname": request.hostname}
        keep = (states.SUCCESS, states.STARTED)
        # One try: a Redis that is away fails the check at once (the task runs, at-least-once), and
        # Celery's own STARTED write then retries as it always does, instead of both waiting it out.
        stored = self._store_unless(request.id, running, states.STARTED, None, context, keep, retry=False)
        if stored is None:
            return None
        code, before = stored
        _claimed.task_id = request.id if code == 1 else None
        if not before:
            return states.PENDING, None
        meta = json.loads(before)
        return meta.get("status"), meta.get("retries")

    def _store_unless(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: str | None,
        request: Any,
        keep: tuple[str, ...],
        retry: bool = True,
    ) -> tuple[int, bytes] | None:
        """Store the state unless the stored status is one of ``keep``: (the script's code, the value
        stored before). None: the script cannot do it (another serializer, compression, scripts refused,
        a value that is not JSON). ``retry``: through Celery's retry policy for result writes."""
        if self.serializer != "json" or self.compression or self._scripts_refused:
            return None
        meta = self._get_result_meta(result=result, state=state, traceback=traceback, request=request)
        meta["task_id"] = bytes_to_str(task_id)
        value = self.encode(meta)
        if isinstance(value, str) and len(value) > self._MAX_STR_VALUE_SIZE:
            raise BackendStoreError("value too large for Redis backend", state=state, task_id=task_id)
        expires = self.failure_expires if state == states.FAILURE else None
        expires = self.expires if expires is None else expires
        key = self.get_key_for_task(task_id)
        args = [value, int(expires or 0), *keep]
        try:
            call = partial(self._store_script, keys=[key], args=args)
            code, before = self.ensure(call, ()) if retry else call()
        except ResponseError:  # scripts not allowed here (an ACL, a proxy): Celery's two round trips from now on
            logger.warning("the Redis result backend refused a script; storing results as Celery does", exc_info=True)
            self._scripts_refused = True
            return None
        if code == -1:  # not JSON (another serializer wrote it)
            return None
        return code, before
