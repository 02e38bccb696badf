"""The results database (SQLAlchemy + alembic), in the shape of Optuna's ``storages/_rdb/``.

Only the driver (CLI) and the dashboard open it; workers never do. Its parts:

* ``schema``: the tables as the queries see them; ``views``: every version of the ``sweep_results`` view
  (its columns declared once); ``migrations/`` creates them;
* ``engine``: URLs, connections, transactions, migrations, cross-process locks, retries;
* ``studies``: registering a study and its cells; ``leases``: the driver's cell lifecycle, exactly once;
* ``results``: the ``sweep_results`` rows and curves; ``queue``: the service queue and its controls;
* ``trials``: Optuna's storage beside ours; ``optuna_log``: finished cells as Optuna trials (imports Optuna).

Callers use the names re-exported here (``store.claim``); ``optuna_log`` is imported by its own path
because it imports Optuna, which the everyday commands do not need.
"""

from study.store.engine import (
    DEFAULT_DB,
    MIGRATIONS,
    SCHEMA_HEAD,
    connect,
    db_now,
    describe_url,
    exclusive,
    migrate,
    retrying,
    transaction,
    transient,
)
from study.store.leases import (
    claim,
    finish,
    get_cells,
    heartbeat,
    held,
    last_curves,
    record_epochs,
    release,
    release_held,
)
from study.store.queue import (
    QUEUE_CHANNEL,
    SERVICE_ALIVE_SECONDS,
    notify,
    overview,
    queue,
    service_beat,
    service_stopped,
    services_alive,
    set_state,
    study_states,
)
from study.store.results import cell_curves, result_rows, results, status_counts
from study.store.studies import (
    cell_hparams,
    find_study,
    get_study,
    is_current,
    list_studies,
    register,
    retry_failed,
    study_is_current,
)
from study.store.trials import (
    delete_optuna_studies,
    forget_optuna_trials,
    legacy_optuna_study_name,
    optuna_storage,
    optuna_study_name,
    retire_trials,
    set_optuna_trials,
    unreported_cells,
    unreported_studies,
)
