"""The Ray plumbing, apart from training: the worker actor, the pool the driver runs cells on, connecting
to a Ray cluster, and the background warm workers' server.

* ``actor``: :class:`CellWorker`, a Ray actor that trains batches (``workers.population.train_payload``);
* ``ray_pool``: :class:`RayPool`, whose ``events`` are :data:`study.protocol.Event` s (epoch, result, failure,
  lost);
* ``connect``: :func:`connect` to a local Ray or a cluster, every failure one line;
* ``warm_server``: the per-user background process that owns a local Ray and a pool (``python -m
  workers.pool.warm_server``).
"""

from study.errors import ClusterLost
from workers.pool.actor import CellWorker
from workers.pool.connect import ClusterUnreachable, connect
from workers.pool.ray_pool import RayPool

__all__ = ["CellWorker", "ClusterLost", "ClusterUnreachable", "RayPool", "connect"]
