"""The worker side: what runs inside ``fleet worker`` / ``celery -A fleet worker`` only.

One concern per module:

- :mod:`~fleet.worker.run` starts one pool's worker from its spec (node name, argv, exit code);
- :mod:`~fleet.worker.shutdown` makes TERM a bounded soft shutdown (before Celery is imported);
- :mod:`~fleet.worker.topology` declares queues.py's topology on every connect;
- :mod:`~fleet.worker.consumer` is the consumer that survives any message: it checks each one
  against :mod:`~fleet.worker.protocol` and dead-letters what cannot run;
- :mod:`~fleet.worker.parking` parks far-future ETAs in ``fleet.delay.*`` queues (the task Strategy);
- :mod:`~fleet.worker.request` is the Request chain Celery runs each task through (dead-letter
  on timeout, metered, once per id), readable in one place;
- :mod:`~fleet.worker.dedup` decides whether a delivery already ran (a task id runs once);
- :mod:`~fleet.worker.health` writes the liveness/readiness files and reads them for the probes;
- :mod:`~fleet.worker.tasklog` logs every task outcome;
- :mod:`~fleet.worker.logwrites` writes the success lines in batches (one write, not one per task).

What stays outside, and why: :mod:`fleet.celery_app` builds the Celery app the API,
beat and CLI publish with as well; :mod:`fleet.beat` is its own process (one leader among
any number of beats); :mod:`fleet.failover` and :mod:`fleet.republish` serve every
connection and every process that republishes (``fleet dlq replay`` too). Worker metrics
live with the other metrics in :mod:`fleet.metrics`.

Nothing here imports the Celery app at package import, so :mod:`fleet.worker.shutdown`
can run before Celery is imported.
"""
