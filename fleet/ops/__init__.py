"""What operators see and do, one module per concern, shared by the API (fleet.api.ops_routes),
the console (fleet.console) and the CLI: queues, dead letters, scheduled work, workers, recent
tasks, and queue pauses. None of them needs task events: the broker, the result backend, the
workers' remote control and their health files say it all.
"""
