"""What fleet's tests and benchmarks share (as ``celery.contrib.testing`` for Celery's).

``broker``: a private RabbitMQ vhost and raw queue access; ``processes``: real ``fleet`` processes
started the way operators start them; ``ports``: free loopback ports. Shipped in the package so
``bench/`` need not import ``tests/``; nothing in fleet's own code imports it.
"""
