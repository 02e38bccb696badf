from __future__ import annotations

import itertools
import json
import math
import textwrap
import warnings

import numpy as np
import pytest

import optimizers
from study import spec
from study.errors import UserError
from tests.conftest import ROOT

QUICKSTART = ROOT / "examples" / "quickstart.toml"


def test_quickstart_expands_to_every_point_and_seed():
    study = spec.load(QUICKSTART)
    cells = spec.expand(study)
    assert len(cells) == study.cell_count() == (7 * 3 + 7 * 4 + 7) * 2
    assert [c.index for c in cells] == list(range(len(cells)))
    # each (optimizer, seed, point) appears once, with every hyperparameter the optimizer takes
    keys = {(c.optimizer, c.seed, tuple(sorted(c.hparams.items()))) for c in cells}
    assert len(keys) == len(cells)
    for cell in cells:
        assert set(cell.hparams) == set(optimizers.spec(cell.optimizer).hparams)
    adam = [c for c in cells if c.optimizer == "adam" and c.seed == 0]
    assert sorted({c.hparams["lr"] for c in adam}) == pytest.approx(list(np.logspace(-4, -1, 7)), rel=1e-11)
    assert {c.hparams["beta1"] for c in adam} == {0.0, 0.9, 0.99}
    assert {c.hparams["beta2"] for c in adam} == {optimizers.spec("adam").hparams["beta2"].default}
    assert {c.hparams["momentum"] for c in cells if c.optimizer == "sgdm"} == {0.9}
    assert study.swept_axes("adabound") == ["lr", "final_lr"]
    assert study.direction == "maximize"


def test_order_is_optimizer_then_seed_then_point():
    cells = spec.expand(spec.load(QUICKSTART))
    order = [(c.optimizer, c.seed) for c in cells]
    groups = [key for key, _ in itertools.groupby(order)]
    assert groups == [(o, s) for o in ("adam", "adabound", "sgdm") for s in (0, 1)]


def _in_run_order(cells):
    position = spec.run_order(cells)
    assert sorted(position) == list(range(len(cells)))  # a permutation: every cell once
    return [cells[k] for k in sorted(range(len(cells)), key=position.__getitem__)]


def _runs(ordered):
    """Consecutive cells of one (optimizer, seed): [(optimizer, seed, cells)]."""
    return [(o, s, list(group)) for (o, s), group in itertools.groupby(ordered, key=lambda c: (c.optimizer, c.seed))]


def test_run_order_starts_with_a_coarse_map_of_every_optimizer():
    study = spec.load(QUICKSTART)
    ordered = _in_run_order(spec.expand(study))
    assert spec.run_order(spec.expand(study)) == spec.run_order(spec.expand(spec.load(QUICKSTART)))  # reproducible
    scouts = _runs(ordered)[:3]
    assert [(o, s) for o, s, _ in scouts] == [("adam", 0), ("adabound", 0), ("sgdm", 0)]  # file order, first seed
    for optimizer, _, cells in scouts:
        grid = study.grid(optimizer)
        swept = study.swept_axes(optimizer)
        assert len(cells) == 3 ** len(swept) <= spec.SCOUT_CELLS  # ends and middle of every swept axis
        for axis in swept:
            values = grid[axis]
            assert {c.hparams[axis] for c in cells} == {values[0], values[len(values) // 2 - (len(values) % 2 == 0)],
                                                         values[-1]}
        corners = {tuple(c.hparams[a] for a in swept) for c in cells[:2 ** len(swept)]}
        assert corners == set(itertools.product(*[(grid[a][0], grid[a][-1]) for a in swept]))  # corners first


def test_each_optimizer_and_seed_walks_its_grid_coarse_to_fine():
    """Every prefix of an (optimizer, seed)'s cells that completes a level is a sub-grid: corners, then each
    axis' ends and middle, then its quarters …"""
    study = spec.parse(BASE.replace("seeds = [0]", "seeds = [4, 2]") + "[optimizers.adam]\n"
                       "lr = { log = [1e-5, 1e-1], num = 9 }\nbeta1 = { linear = [0.0, 0.99], num = 5 }\n")
    ordered = _in_run_order(spec.expand(study))
    lrs, betas = study.grid("adam")["lr"], study.grid("adam")["beta1"]
    for seed in (4, 2):
        walk = [(lrs.index(c.hparams["lr"]), betas.index(c.hparams["beta1"])) for c in ordered if c.seed == seed]
        assert sorted(walk) == sorted(itertools.product(range(9), range(5)))
        for lr_levels, beta_levels in [([0, 8], [0, 4]), ([0, 4, 8], [0, 2, 4]), ([0, 2, 4, 6, 8], [0, 1, 2, 3, 4])]:
            size = len(lr_levels) * len(beta_levels)
            assert set(walk[:size]) == set(itertools.product(lr_levels, beta_levels)), (seed, size)


def test_run_order_deals_population_sized_chunks_in_rounds():
    """Scouts of the first seed, then per round, seed and optimizer the next 64 grid points (the first
    seed's first chunk tops its scout up to 64): every chunk is one run of one (optimizer, seed)."""
    study = spec.parse(BASE.replace("seeds = [0]", "seeds = [0, 1]") + "[optimizers.adam]\n"
                       "lr = { log = [1e-6, 1.0], num = 150 }\n\n[optimizers.sgdm]\nlr = [0.1, 0.01]\n")
    runs = [(o, s, len(cells)) for o, s, cells in _runs(_in_run_order(spec.expand(study)))]
    assert spec.ORDER_CHUNK == 64
    assert runs == [("adam", 0, 3), ("sgdm", 0, 2),  # round 0: scouts (sgdm's two points are its whole grid)
                    ("adam", 0, 61), ("adam", 1, 64), ("sgdm", 1, 2),  # round 1: adam's first 64 points per seed
                    ("adam", 0, 64), ("adam", 1, 64),  # round 2
                    ("adam", 0, 22), ("adam", 1, 22)]  # round 3: the rest


def test_order_chunk_is_what_the_driver_sends_a_worker_at_most():
    from study.driver import runner

    assert spec.ORDER_CHUNK == runner.AUTO_POPULATION


def test_linear_range_includes_both_ends():
    assert spec.axis_values({"linear": [0.5, 0.9], "num": 5}) == pytest.approx([0.5, 0.6, 0.7, 0.8, 0.9])
    assert spec.axis_values({"log": [1e-4, 1e-1], "num": 1}) == [1e-4]


def test_fingerprint_ignores_formatting_but_not_content():
    text = QUICKSTART.read_text()
    same = spec.parse("# a comment\n" + text.replace(" = ", "="))
    assert same.fingerprint() == spec.parse(text).fingerprint()
    assert spec.parse(text.replace("epochs = 5", "epochs = 6")).fingerprint() != same.fingerprint()


BASE = 'name = "s"\ntask = "digits-mlp"\nepochs = 2\nbatch_size = 8\nseeds = [0]\nmetric = "test_accuracy"\n'


@pytest.mark.parametrize("text,needle", [
    (BASE + "[optimizers.adm]\nlr = 0.1\n", "unknown optimizer 'adm'; known: adam"),
    (BASE + "[optimizers.adam]\nmomentum = 0.1\n", "unknown hyperparameter 'momentum'"),
    (BASE + "[optimizers.adam]\nlr = { log = [1e-1, 1e-4], num = 3 }\n", "start must not exceed its end"),
    (BASE + "[optimizers.adam]\nlr = { log = [0, 1e-1], num = 3 }\n", "must be positive"),
    (BASE + "[optimizers.adam]\nlr = { log = [1e-4, 1e-1], num = 0 }\n", "num must be a whole number"),
    (BASE + "[optimizers.adam]\nlr = []\n", "empty list"),
    (BASE + "[optimizers.adam]\nlr = \"fast\"\n", "expected a number"),
    (BASE + "[optimizers.adam]\nbeta1 = 1.5\n", "beta1 = 1.5 must lie in [0, 1)"),
    (BASE + "[optimizers.adam]\nlr = -0.1\n", "must lie in (0"),
    (BASE + "[optimizers.adam]\nlr = { log = [1e-9, 1], num = 1000 }\nbeta1 = { linear = [0, 0.9], num = 200 }\n",
     "more than the 100,000 allowed"),
    (BASE.replace("digits-mlp", "imagenet") + "[optimizers.adam]\nlr = 0.1\n", "unknown task 'imagenet'"),
    (BASE.replace("test_accuracy", "bleu") + "[optimizers.adam]\nlr = 0.1\n", "metric 'bleu' is not reported"),
    (BASE.replace("seeds = [0]", "seeds = [0, 0]") + "[optimizers.adam]\nlr = 0.1\n", "seeds must not repeat"),
    (BASE + "epochz = 3\n[optimizers.adam]\nlr = 0.1\n", "epochz: unknown key"),
    (BASE, "optimizers: missing required key"),
    (BASE + "[optimizers]\n", "optimizers"),
    ("name = \n", "not valid TOML"),
    (BASE + "[task_options]\nC = 3\n[optimizers.adam]\nlr = 0.1\n", "task digits-mlp has no such option"),
    (BASE.replace("digits-mlp", "reddi").replace("test_accuracy", "x") + "[task_options]\nC = 1.5\n"
     "[optimizers.adam]\nlr = 0.1\n", "task_options.C = 1.5 must be greater than 2"),
    (BASE.replace("digits-mlp", "reddi").replace("test_accuracy", "x") + "[task_options]\nform = \"offline\"\n"
     "[optimizers.adam]\nlr = 0.1\n", "must be one of 'online', 'stochastic'"),
    (BASE + "[lr_schedule]\nkind = \"step\"\nmilestones = [5]\n[optimizers.adam]\nlr = 0.1\n",
     "5 is beyond the last epoch (2)"),
    (BASE + "[lr_schedule]\nkind = \"step\"\nmilestones = [2, 1]\n[optimizers.adam]\nlr = 0.1\n",
     "milestones must increase"),
    (BASE + "[lr_schedule]\nkind = \"linear\"\n[optimizers.adam]\nlr = 0.1\n", "lr_schedule"),
    (BASE + "weight_decay = -1\n[optimizers.adam]\nlr = 0.1\n", "weight_decay"),
])
def test_bad_study_files_get_one_clear_line(text, needle):
    with pytest.raises(UserError) as info:
        spec.parse(text, "study.toml")
    message = str(info.value)
    assert needle in message
    assert message.startswith("study.toml") and "\n" not in message


REDDI = BASE.replace("digits-mlp", "reddi").replace("test_accuracy", "x")
ADAM = "[optimizers.adam]\nlr = 0.1\n"
HUGE = "1" + "0" * 400  # a TOML integer beyond the float range
FINITE = "must be a finite number (inf and nan are not allowed)"
SEEDS = "seeds: each seed must be a whole number from 0 to 2147483647"
CUT = HUGE[:39] + "…"  # how a message quotes a number too long to show

# Numbers that passed validation (or crashed it, or warned) and then broke storage or every run, each with
# the whole message that refuses it (after "study.toml: ").
BAD_NUMBERS = [
    (BASE.replace("[0]", "[9223372036854775808]") + ADAM, f"{SEEDS} (got 9223372036854775808)"),  # 2**63: OverflowError on SQLite
    (BASE.replace("[0]", "[9223372036854775807]") + ADAM, f"{SEEDS} (got 9223372036854775807)"),  # 2**63 - 1: accepted, crashed later
    (BASE.replace("[0]", "[0, 2147483648]") + ADAM, f"{SEEDS} (got 2147483648)"),  # 2**31: out of PostgreSQL's integer range
    (BASE.replace("[0]", "[-1]") + ADAM, f"{SEEDS} (got -1)"),
    (BASE.replace("[0]", "[true]") + ADAM, f"{SEEDS} (got true)"),
    (BASE.replace("[0]", '["3"]') + ADAM, f"{SEEDS} (got '3')"),
    (BASE.replace("[0]", "[" + "1" * 5000 + "]") + ADAM, "not valid TOML: a number has too many digits to read"),
    (BASE + "weight_decay = inf\n" + ADAM, f"weight_decay: {FINITE}"),
    (BASE + "weight_decay = nan\n" + ADAM, f"weight_decay: {FINITE}"),
    (BASE + f"weight_decay = {HUGE}\n" + ADAM, f"weight_decay: {CUT} is too large for a floating-point number"),
    (BASE.replace("epochs = 2", "epochs = inf") + ADAM, f"epochs: {FINITE}"),
    (BASE + "eval_every = 9223372036854775808\n" + ADAM,
     "eval_every: Input should be less than or equal to 2147483647"),
    (BASE + "divergence_factor = inf\n" + ADAM, f"divergence_factor: {FINITE}; use 0 to stop only on a non-finite loss"),
    (BASE + "divergence_factor = -inf\n" + ADAM,
     f"divergence_factor: {FINITE}; use 0 to stop only on a non-finite loss"),
    (BASE + '[lr_schedule]\nkind = "step"\nmilestones = [1]\nfactor = nan\n' + ADAM, f"lr_schedule.factor: {FINITE}"),
    (BASE + '[lr_schedule]\nkind = "cosine"\nfinal_factor = nan\n' + ADAM, f"lr_schedule.final_factor: {FINITE}"),
    (REDDI + "[task_options]\nC = inf\n" + ADAM, f"task_options.C = inf {FINITE}"),  # stored as null
    (REDDI + "[task_options]\nC = -inf\n" + ADAM, f"task_options.C = -inf {FINITE}"),
    (REDDI + f"[task_options]\nC = {HUGE}\n" + ADAM, f"task_options.C = {CUT} is too large for a floating-point number"),
    (REDDI + "[task_options]\nsteps_per_epoch = 9223372036854775808\n" + ADAM,
     "task_options.steps_per_epoch = 9223372036854775808 must be a whole number from 1 to 2147483647"),
    (BASE + "[optimizers.adam]\nlr = { log = [1e-4, inf], num = 3 }\n",
     "optimizers.adam.lr: range bounds must be finite numbers (got [0.0001, inf])"),  # numpy warned
    (BASE + "[optimizers.adam]\nlr = { log = [-inf, 1e-1], num = 3 }\n",
     "optimizers.adam.lr: range bounds must be finite numbers (got [-inf, 0.1])"),
    (BASE + "[optimizers.adam]\nbeta1 = { linear = [0, nan], num = 3 }\n",
     "optimizers.adam.beta1: range bounds must be finite numbers (got [0, nan])"),
    (BASE + "[optimizers.adam]\nlr = { log = [true, 10], num = 3 }\n",
     "optimizers.adam.lr: range bounds must be finite numbers (got [true, 10])"),
    (BASE + f"[optimizers.adam]\nlr = {{ log = [1e-4, {HUGE}], num = 3 }}\n",
     f"optimizers.adam.lr: range bounds must be finite numbers (got [0.0001, {CUT}])"),  # OverflowError traceback
    (BASE + "[optimizers.adam]\nlr = { log = [1e-4, 1e-1], num = true }\n",
     "optimizers.adam.lr: num must be a whole number from 1 to 1000"),
    (BASE + "[optimizers.adam]\nlr = { linear = [-1e308, 1e308], num = 3 }\n",
     "optimizers.adam.lr: range [-1e+308, 1e+308] is too wide to space 3 points in; narrow it"),  # numpy warned
    (BASE + "[optimizers.adam]\nlr = [inf, inf]\n", "optimizers.adam.lr = inf must be a finite number"),  # "values repeat"
    (BASE + f"[optimizers.adam]\nlr = {HUGE}\n", f"optimizers.adam.lr: {CUT} is too large for a floating-point number"),  # OverflowError traceback
    (BASE + f"[optimizers.adam]\nlr = [0.1, {HUGE}]\n",
     f"optimizers.adam.lr: {CUT} is too large for a floating-point number"),
]


@pytest.mark.parametrize("text,expected", BAD_NUMBERS, ids=[f"bad{i}" for i in range(len(BAD_NUMBERS))])
def test_out_of_range_numbers_are_refused_on_one_line_without_warnings(text, expected):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's overflow / invalid-value warnings fail the test
        with pytest.raises(UserError) as info:
            spec.parse(text, "study.toml")
    message = str(info.value)
    assert message == f"study.toml: {expected}"
    assert "\n" not in message and len(message) < 300


def test_seeds_run_from_0_to_2_31_minus_1():
    study = spec.parse(BASE.replace("[0]", "[0, 2147483647, 5.0]") + ADAM)
    assert study.seeds == [0, 2147483647, 5]
    assert {c.seed for c in spec.expand(study)} == {0, 2147483647, 5}
    for seed in ("-1", "2147483648", "0.5"):
        with pytest.raises(UserError, match=SEEDS):
            spec.parse(BASE.replace("[0]", f"[{seed}]") + ADAM)


def test_whole_number_task_options_stop_at_2_31_minus_1():
    top = spec.parse(REDDI + "[task_options]\nsteps_per_epoch = 2147483647\n" + ADAM)
    assert top.protocol().task_options["steps_per_epoch"] == 2147483647
    with pytest.raises(UserError, match="from 1 to 2147483647"):
        spec.parse(REDDI + "[task_options]\nsteps_per_epoch = 2147483648\n" + ADAM)


ODD_BUT_VALID = [
    BASE.replace("[0]", "[0, 2147483647]") + "[optimizers.adam]\nlr = [1e-300, 1e-3, 1e300]\neps = 5e-324\n",
    BASE + "weight_decay = 1e300\ndivergence_factor = 0\n[optimizers.adam]\nlr = { log = [1e-300, 1e300], num = 7 }\n",
    BASE + "divergence_factor = 1e300\n[optimizers.adam]\nlr = 1\nbeta1 = { linear = [0, 0.99], num = 4 }\n",
    BASE + '[lr_schedule]\nkind = "step"\nmilestones = [1, 2]\nfactor = 1e-300\n[optimizers.sgdm]\nlr = [1, 2, 3]\n',
    BASE + '[lr_schedule]\nkind = "cosine"\nfinal_factor = 5e-324\n' + ADAM,
    REDDI + "[task_options]\nC = 1e300\nsteps_per_epoch = 2147483647\n" + ADAM,
    QUICKSTART.read_text(),
]


@pytest.mark.parametrize("text", ODD_BUT_VALID + [text for text, _ in BAD_NUMBERS],
                         ids=[f"odd{i}" for i in range(len(ODD_BUT_VALID))]
                         + [f"bad{i}" for i in range(len(BAD_NUMBERS))])
def test_what_parse_accepts_survives_the_database_round_trip(text):
    """The store keeps ``model_dump(mode="json")`` as JSON and reads it back: nothing may change on the way.
    What parse must refuse (BAD_NUMBERS) never gets that far: it is refused with its exact message."""
    refused = dict(BAD_NUMBERS)
    if text in refused:
        with pytest.raises(UserError) as info:
            spec.parse(text, "study.toml")
        assert str(info.value) == f"study.toml: {refused[text]}"
        return
    study = spec.parse(text)
    stored = json.dumps(study.model_dump(mode="json"), allow_nan=False)  # PostgreSQL's JSON has no inf or nan
    back = spec.StudySpec.model_validate(json.loads(stored))
    assert back.fingerprint() == study.fingerprint()
    assert back.canonical_json() == study.canonical_json()
    assert spec.expand(back) == spec.expand(study)
    assert back.protocol() == study.protocol()


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        spec.load(tmp_path / "nope.toml")


def test_every_registered_hyperparameter_default_is_valid():
    for opt in optimizers.REGISTRY.values():
        for name, hp in opt.hparams.items():
            # a name with no column of its own (schedule-free's warmup_steps) travels in the hparams JSON
            assert name in optimizers.HPARAM_NAMES or name.isidentifier(), (opt.name, name)
            assert hp.check(hp.default) is None, (opt.name, name)
            assert hp.check(hp.search[0]) is None and hp.check(hp.search[1]) is None
            assert hp.check(math.nan) is not None


def test_training_keys_default_to_the_task_and_global_weight_decay_fills_in():
    text = ('name = "s"\ntask = "quadratic-deep"\nseeds = [0]\nmetric = "test_loss"\nweight_decay = 5e-4\n'
            "[optimizers.adam]\nlr = 0.1\n[optimizers.adamw]\nweight_decay = 0.1\n[optimizers.adagrad]\n")
    study = spec.parse(text)
    plan = study.protocol()
    assert (plan.epochs, plan.batch_size, plan.lr_schedule) == (100, 128, {"kind": "constant"})
    decay = {c.optimizer: c.hparams["weight_decay"] for c in spec.expand(study)}
    assert decay == {"adam": 5e-4, "adamw": 0.1, "adagrad": 5e-4}


def test_deterministic_reaches_the_protocol_and_only_a_file_that_sets_it_changes_fingerprint():
    text = BASE + ADAM
    assert not spec.parse(text).protocol().deterministic
    assert spec.parse(BASE + "deterministic = false\n" + ADAM).fingerprint() == spec.parse(text).fingerprint()
    strict = spec.parse(BASE + "deterministic = true\n" + ADAM)
    assert strict.protocol().deterministic and strict.fingerprint() != spec.parse(text).fingerprint()


def test_every_example_is_a_valid_study():
    for path in sorted((ROOT / "examples").rglob("*.toml")):  # examples/plugins/ too (imports their code)
        assert spec.load(path).cell_count() > 0, path


@pytest.mark.parametrize("text,needle", [
    (BASE + 'amp = "yes"\n' + ADAM, "amp: must be true or false (got 'yes')"),
    (BASE + "download = 1\n" + ADAM, "download: must be true or false (got 1)"),
    (BASE + 'deterministic = "on"\n' + ADAM, "deterministic: must be true or false (got 'on')"),
    (BASE.replace("epochs = 2", "epochs = 2.0") + ADAM, "epochs: must be a whole number (got 2.0)"),
    (BASE.replace('name = "s"', "name = 3") + ADAM, "name: must be a string in quotes (got 3)"),
    (BASE.replace('metric = "test_accuracy"', "metric = true") + ADAM, "metric: must be a string in quotes (got true)"),
    (BASE + "[optimizers.adam]\nlr = { log = [1e-4, 1e-1], num = true }\n",
     "optimizers.adam.lr: num must be a whole number from 1 to 1000"),
])
def test_study_file_types_are_strict(text, needle):
    """A value of the wrong TOML type is refused with what was expected, never coerced."""
    with pytest.raises(UserError) as info:
        spec.parse(text, "study.toml")
    assert str(info.value) == f"study.toml: {needle}"


def test_reading_and_validating_run_no_user_code_resolution_does(tmp_path):
    """A study file naming its own task: read() and validate() never import it (validation without what
    resolution described refuses the name), parse() imports it once, between the two."""
    marker = tmp_path / "imported"
    (tmp_path / "mine.py").write_text(textwrap.dedent(f"""
        from pathlib import Path
        from workers.tasks import task

        Path({str(marker)!r}).write_text("yes")


        @task(metrics={{"test_loss": "minimize"}}, primary="test_loss", epochs=1, batch_size=8)
        def mine(protocol, device):
            raise NotImplementedError
        """))
    text = 'name = "own"\ntask = "./mine.py:mine"\nseeds = [0]\n\n[optimizers.adam]\nlr = [0.1]\n'
    raw = spec.read(text, "own.toml")
    assert raw["task"] == "./mine.py:mine" and not marker.exists()
    with pytest.raises(UserError, match=r"^own.toml: task: unknown task './mine.py:mine'"):
        spec.validate(raw, "own.toml")
    assert not marker.exists()
    parsed = spec.parse(text, "own.toml", tmp_path)
    assert marker.read_text() == "yes" and parsed.task == "./mine.py:mine" and parsed.task in parsed.plugins
