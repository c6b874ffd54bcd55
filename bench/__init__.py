"""`make bench`: fleet measured side by side with plain Celery, Dramatiq and the raw AMQP ceiling.

Every scenario runs against the local RabbitMQ in a private vhost of its own,
warms up, repeats and keeps the median. Nothing here is imported by fleet or by
the tests; speed is only ever asserted here, in numbers, never in `make test`.
"""
