"""Celery's Redis result backend, each state written in one round trip.

Celery stores a state in two: a GET (decoded in the worker) to leave a stored
SUCCESS alone, then SET and PUBLISH in a pipeline. With ``task_track_started``
that is four round trips per task. Here one script does the same on the
server: it reads the stored status, and unless it is SUCCESS sets the value
(with Celery's expiry) and publishes it on the key's channel, as Celery does,
so ``AsyncResult.get()`` and ``on_message`` subscribers hear every state.

Only JSON results without compression take the script (fleet's settings);
a value the script cannot read as JSON, or any other setting, takes Celery's
own path, which decodes or fails as it always did; so does every write after
the server refused a script (scripting denied by an ACL or a proxy).
"""

from __future__ import annotations

import logging
from functools import cached_property
from typing import Any

from celery import states
from celery.backends.redis import RedisBackend
from celery.exceptions import BackendStoreError
from kombu.utils.encoding import bytes_to_str
from redis.exceptions import ResponseError

logger = logging.getLogger("fleet.results")

#: KEYS[1] the task's key; ARGV[1] the encoded meta, ARGV[2] its expiry in seconds (0: none).
#: Returns 1 stored, 0 left alone (SUCCESS is stored), -1 the stored value is not JSON.
STORE_UNLESS_SUCCESS = """
local current = redis.call('GET', KEYS[1])
if current then
  local ok, meta = pcall(cjson.decode, current)
  if not ok then return -1 end
  if type(meta) == 'table' and meta['status'] == ARGV[3] then return 0 end
end
if tonumber(ARGV[2]) > 0 then
  redis.call('SETEX', KEYS[1], ARGV[2], ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
"""


class OneTripRedisBackend(RedisBackend):
    """``RedisBackend`` whose result writes are one server-side script call."""

    _scripts_refused = False

    @cached_property
    def _store_script(self) -> Any:
        return self.client.register_script(STORE_UNLESS_SUCCESS)

    def _store_result(
        self, task_id: str, result: Any, state: str, traceback: str | None = None, request: Any = None, **kwargs: Any
    ) -> Any:
        if self.serializer != "json" or self.compression or self._scripts_refused:
            return super()._store_result(task_id, result, state, traceback, request, **kwargs)
        meta = self._get_result_meta(result=result, state=state, traceback=traceback, request=request)
        meta["task_id"] = bytes_to_str(task_id)
        value = self.encode(meta)
        if isinstance(value, str) and len(value) > self._MAX_STR_VALUE_SIZE:
            raise BackendStoreError("value too large for Redis backend", state=state, task_id=task_id)
        expires = self.failure_expires if state == states.FAILURE else None
        expires = self.expires if expires is None else expires
        key = self.get_key_for_task(task_id)
        args = [value, int(expires or 0), states.SUCCESS]
        try:
            stored = self.ensure(lambda: self._store_script(keys=[key], args=args), ())
        except ResponseError:  # scripts not allowed here (an ACL, a proxy): Celery's two round trips from now on
            logger.warning("the Redis result backend refused a script; storing results as Celery does", exc_info=True)
            self._scripts_refused = True
            return super()._store_result(task_id, result, state, traceback, request, **kwargs)
        if stored == -1:  # not JSON (another serializer wrote it): Celery's path, as it would go
            return super()._store_result(task_id, result, state, traceback, request, **kwargs)
        return result
