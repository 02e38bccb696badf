"""The driver: runs a study's cells on a pool of workers (`run`), a queue of studies (`serve`), and this user's
background warm workers.

* ``runner``: the driver of `run` and `serve` (claims leases, hands out batches, records results exactly once);
* ``options``: its options and their defaults (which the CLI's options take);
* ``service``: the service's heartbeat, wake-up and code-change restart;
* ``warm``: finding, starting and talking to this user's warm workers.
"""
