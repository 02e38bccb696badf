"""The messages between the driver and its workers (study.protocol): they cross pickled (Ray, and the warm
workers' socket) and come back equal; a record's kind is its type, whatever its metrics are named; the
plugin record is stored as the same JSON as before it was typed; the module imports neither torch, Ray
nor pydantic."""

from __future__ import annotations

import dataclasses
import json
import pickle
import subprocess
import sys
import threading
from multiprocessing import Pipe

import pytest

from study.catalog import TrainingProtocol
from study.protocol import (BatchPayload, CellFailure, CellLost, CellPayload, CellResult, DeviceInfo, EpochRecord,
                            OptimizerPlugin, PluginCode, PoolLost, PopulationNote, ResourceFault, TaskPlugin, WarmUp,
                            plugin_record)
from tests.support.paths import ROOT

PLAN = TrainingProtocol(epochs=2, batch_size=8, lr_schedule={"kind": "step", "milestones": [1], "factor": 0.5},
                        task_options={"hidden": 32})

# the stored JSON of a task from a file and of an optimizer from an installed module, exactly as
# study.plugins wrote them when records were plain dicts (keys in that order; a module's unknown version null)
TASK_JSON = {"kind": "task", "reference": "./line.py:line", "attribute": "line", "source": "file",
             "path": "/home/me/line.py", "sha256": "ab" * 32,
             "metrics": {"train_loss": "minimize", "test_loss": "minimize"}, "primary": "test_loss", "epochs": 3,
             "batch_size": 16, "options": {"noise": 0.1}, "description": "y = 3x - 1 + noise.",
             "populations": "it has a recurrent layer (gru: GRU), whose fused kernel torch.func.vmap cannot batch"}
OPTIMIZER_JSON = {"kind": "optimizer", "reference": "signsgd", "entry_point": "adamscape.optimizers:signsgd",
                  "attribute": "SignSGD", "source": "module", "module": "myplugins", "version": None,
                  "package": "/site/myplugins", "sha256": "cd" * 32, "summary": "theta <- theta - lr sign(g)",
                  "batched": False, "packed": {},
                  "hparams": {"lr": {"default": 0.01, "search": [1e-4, 0.1], "log": True, "open_low": True,
                                     "closed_high": True, "low": 0.0, "high": None}}}

TASK_RECORD = plugin_record(TASK_JSON)
OPTIMIZER_RECORD = plugin_record(OPTIMIZER_JSON)
MESSAGES = [
    BatchPayload("./line.py:line", PLAN, (CellPayload(7, "adam", 0, {"lr": 1e-3, "beta1": 0.9}),
                                          CellPayload(8, "signsgd", 1, {"lr": 1e-2})),
                 population=None, halvings=2, plugins={"./line.py:line": TASK_RECORD, "signsgd": OPTIMIZER_RECORD}),
    WarmUp("digits-mlp", PLAN),
    EpochRecord(3, {"train_loss": 0.25, "test_accuracy": 0.5}, key=7),
    CellResult("diverged", {"train_loss": float("inf"), "initial_train_loss": 2.3}, best_test_accuracy=None,
               wall_seconds=1.5, device="cuda (NVIDIA H100)", peak_memory_mib=812.5,
               population=PopulationNote(16, "16 configs per pass: 3.1x faster"), key=(2, 7)),
    CellFailure(7, "Traceback (most recent call last):\nValueError: boom", "cpu"),
    ResourceFault(7, "OutOfMemoryError: CUDA out of memory"),
    CellLost(7, "worker died: ActorDiedError: node gone"),
    PoolLost("the warm workers stopped (RuntimeError)"),
    DeviceInfo("cuda", "2.8.0", "12.8", ("0",), gpu="NVIDIA H100", capability="sm_90", memory_gib=79.2,
               memory_fraction=0.5),
    TASK_RECORD,
    OPTIMIZER_RECORD,
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_comes_back_equal_through_pickle(message):
    again = pickle.loads(pickle.dumps(message))
    assert type(again) is type(message) and again.kind == message.kind
    if isinstance(message, CellResult):  # inf == inf; compare the rest field by field
        assert again.final == message.final and dataclasses.replace(again, final={}) == dataclasses.replace(
            message, final={})
    else:
        assert again == message
    with pytest.raises(dataclasses.FrozenInstanceError):
        message.kind = "other"


def test_the_messages_cross_a_multiprocessing_connection_as_the_warm_workers_send_them():
    """The warm workers' socket is a multiprocessing.connection: the objects themselves, pickled."""
    here, there = Pipe()
    here.send(("dispatch", 0, MESSAGES[0], 3600.0))
    assert there.recv() == ("dispatch", 0, MESSAGES[0], 3600.0)
    events = [m for m in MESSAGES if isinstance(m, (EpochRecord, CellFailure, CellLost))]
    there.send(events)
    assert here.recv() == events


def test_the_warm_pool_returns_the_servers_events_as_they_are_and_raises_when_its_pool_is_gone():
    from study.driver.warm import WarmPool
    from study.errors import ClusterLost

    here, there = Pipe()
    answers = [[EpochRecord(1, {"train_loss": 1.0}, key=5), CellResult("complete", {"train_loss": 0.5}, key=5)],
               [PoolLost("the warm workers stopped (RuntimeError: ray died)")]]

    def server():
        for answer in answers:
            assert there.recv() == ("events", 0.0)
            there.send(answer)

    thread = threading.Thread(target=server, daemon=True)
    thread.start()
    pool = WarmPool(here, {"workers": 1, "pid": 0}, stall_seconds=60.0)
    assert pool.events(0.0) == answers[0]
    with pytest.raises(ClusterLost, match="ray died"):
        pool.events(0.0)
    thread.join(5)


def test_a_batch_rekeyed_for_the_warm_workers_keeps_everything_else():
    batch = MESSAGES[0]
    wrapped = batch.keyed(lambda key: (3, key))
    assert [c.key for c in wrapped.cells] == [(3, 7), (3, 8)]
    assert dataclasses.replace(wrapped, cells=batch.cells) == batch


def test_an_epoch_record_and_a_result_with_the_same_metrics_are_told_apart_by_their_type():
    """With dicts, a record was what its keys made it: an epoch with a metric named ``fault`` or ``error``
    (a user's task may report any name) read as a resource fault or a crash. Now the type says."""
    metrics = {"train_loss": 0.5, "fault": 1.0, "error": 0.1, "final": 2.0, "status": 3.0}
    epoch, result = EpochRecord(2, metrics, key=1), CellResult("complete", metrics, key=1)
    assert (epoch.kind, result.kind) == ("epoch", "result") and epoch != result
    kinds = []
    for record in (epoch, result, CellFailure(1, "boom"), CellLost(1, "gone")):
        match record:
            case EpochRecord():
                kinds.append("epoch")
            case CellResult():
                kinds.append("result")
            case CellFailure() | CellLost():
                kinds.append(record.kind)
    assert kinds == ["epoch", "result", "failure", "lost"]


def test_the_ray_pool_reads_a_workers_stream_by_type(monkeypatch):
    """RayPool's reading of one worker's stream (Ray's get stubbed): an epoch whose metrics are named like
    other records' fields stays an epoch; a result ends its cell; a resource fault loses every unfinished
    cell and replaces the worker."""
    from workers.pool import ray_pool

    monkeypatch.setattr(ray_pool.ray, "get", lambda ref: ref)
    pool = ray_pool.RayPool.__new__(ray_pool.RayPool)
    respawned = []
    monkeypatch.setattr(pool, "_respawn", lambda index: respawned.append(index), raising=False)
    stream = iter([EpochRecord(1, {"train_loss": 1.0, "fault": 1.0, "error": 1.0}, key="a"),
                   CellResult("complete", {"train_loss": 0.5}, key="a"),
                   ResourceFault("b", "OutOfMemoryError: CUDA out of memory")])
    pool.slots = [ray_pool._Slot(actor=None, starting=None, spawned=0.0, keys=["a", "b", "c"], stream=stream)]
    assert pool._next_events(0) == [EpochRecord(1, {"train_loss": 1.0, "fault": 1.0, "error": 1.0}, key="a")]
    assert pool.slots[0].keys == ["a", "b", "c"]
    assert pool._next_events(0) == [CellResult("complete", {"train_loss": 0.5}, key="a")]
    assert pool.slots[0].keys == ["b", "c"]
    lost = pool._next_events(0)
    assert lost == [CellLost("b", "resource fault on the worker: OutOfMemoryError: CUDA out of memory"),
                    CellLost("c", "resource fault on the worker: OutOfMemoryError: CUDA out of memory")]
    assert respawned == [0]


def test_a_plugin_record_is_stored_as_the_same_json_it_always_was():
    for stored in (TASK_JSON, OPTIMIZER_JSON):
        record = plugin_record(json.loads(json.dumps(stored)))
        assert json.dumps(record.to_dict()) == json.dumps(stored)  # the same keys, in the same order
        assert plugin_record(record.to_dict()) == record
    assert isinstance(TASK_RECORD, TaskPlugin) and isinstance(OPTIMIZER_RECORD, OptimizerPlugin)
    assert TASK_RECORD.kind == "task" and OPTIMIZER_RECORD.kind == "optimizer"
    # located, not yet described: a file's record has no version; a module's has one, null when unknown
    located = PluginCode(kind="task", reference="./t.py:t", attribute="t", source="file", path="/t.py", sha256="ef")
    assert list(located.to_dict()) == ["kind", "reference", "attribute", "source", "path", "sha256"]
    assert TaskPlugin(**located.location(), metrics={}, primary="train_loss", epochs=1, batch_size=1, options={},
                      description="").to_dict()["kind"] == "task"


def test_a_study_spec_keeps_its_plugins_as_records_and_dumps_them_as_stored():
    from study.spec import StudySpec

    raw = {"name": "own", "task": "./line.py:line", "seeds": [0], "optimizers": {"signsgd": {"lr": [1e-2, 1e-1]}},
           "plugins": {"./line.py:line": TASK_JSON, "signsgd": OPTIMIZER_JSON}}
    spec = StudySpec.model_validate(json.loads(json.dumps(raw)))
    assert spec.plugins == {"./line.py:line": TASK_RECORD, "signsgd": OPTIMIZER_RECORD}
    assert spec.task_info.primary == "test_loss" and spec.optimizer_spec("signsgd").hparams["lr"].default == 0.01
    stored = spec.model_dump(mode="json")
    assert json.dumps(stored["plugins"]) == json.dumps(raw["plugins"])
    assert StudySpec.model_validate(stored) == spec
    plain = StudySpec.model_validate({k: v for k, v in raw.items() if k != "plugins"} | {
        "task": "digits-mlp", "optimizers": {"adam": {"lr": [1e-2]}}})
    assert "plugins" not in json.loads(plain.canonical_json())  # a plugin-free study's fingerprint as before


@pytest.mark.parametrize("broken,match", [({**TASK_JSON, "kind": "sampler"}, "unknown plugin kind 'sampler'"),
                                          ({**TASK_JSON, "colour": "red"}, "unexpected keyword argument 'colour'"),
                                          ({k: v for k, v in TASK_JSON.items() if k != "primary"}, "primary")])
def test_a_broken_stored_plugin_record_is_refused_by_name(broken, match):
    with pytest.raises(ValueError, match=match):
        plugin_record(broken)


def test_the_protocol_imports_neither_torch_ray_nor_pydantic():
    code = ("import sys, study.protocol; "
            "print(sorted(m for m in ('torch', 'ray', 'pydantic') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
