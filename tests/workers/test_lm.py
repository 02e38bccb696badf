"""The pydoc-transformer task: its corpus (the Python docs' topic texts), batches, causal model, losses, options."""

from __future__ import annotations

import hashlib
import math
import platform
import sys

import pytest
import torch

from study.catalog import TASKS, TrainingProtocol
from workers import data, models, population, tasks, training

TASK = "pydoc-transformer"


def _plan(epochs: int = 1, batch_size: int = 8, **options) -> TrainingProtocol:
    defaults = {key: option.default for key, option in TASKS[TASK].options.items()}
    return TrainingProtocol(epochs=epochs, batch_size=batch_size, task_options=defaults | options)


def _problem(seed: int = 0, **options) -> tasks.LanguageModel:
    torch.manual_seed(seed)
    return tasks.build(TASK, _plan(**options), "cpu")


def _expected_text() -> bytes:
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics)).encode("utf-8")


def test_the_corpus_is_the_python_docs_topic_texts_and_its_hash_is_recorded():
    corpus = data.pydoc_corpus()
    expected = _expected_text()
    assert bytes(corpus.tokens.tolist()) == expected and corpus.tokens.dtype == torch.uint8
    assert corpus.sha256 == hashlib.sha256(expected).hexdigest()
    assert corpus.source == "pydoc_data.topics.topics" and corpus.python == platform.python_version()
    description = TASKS[TASK].description
    assert data.PYDOC_SHA256 in description and data.PYDOC_PYTHON in description and "pydoc_data.topics" in description
    assert f"{data.PYDOC_BYTES:,}" in description
    if platform.python_version() == data.PYDOC_PYTHON:  # the documented text is this Python's
        assert corpus.sha256 == data.PYDOC_SHA256 and len(corpus.tokens) == data.PYDOC_BYTES


def test_a_python_without_the_topic_texts_gets_a_clear_error(monkeypatch):
    data.pydoc_corpus.cache_clear()
    monkeypatch.setitem(sys.modules, "pydoc_data.topics", None)  # an import of it now fails
    try:
        with pytest.raises(data.DatasetMissingError, match=r"pydoc-transformer reads pydoc_data\.topics"):
            tasks.build(TASK, _plan(), "cpu")
    finally:
        data.pydoc_corpus.cache_clear()


def test_the_last_tenth_is_the_test_text_and_windows_follow_each_other():
    tokens = data.pydoc_corpus().tokens
    cut = len(tokens) - len(tokens) // 10
    train, test = data.token_windows(tokens, 64, 1000)
    assert train.shape[1] == test.shape[1] == 65 and train.dtype == torch.long
    assert torch.equal(train[1:, 0], train[:-1, -1])  # consecutive windows share one token
    covered = torch.cat([train[:, :-1].flatten(), train[-1:, -1]])
    assert torch.equal(covered, tokens[:len(covered)].long()) and cut - 64 < len(covered) <= cut
    assert torch.equal(test[0], tokens[cut:cut + 65].long())
    assert len(test) == (1000 - 1) // 64 and test[-1, -1] == tokens[cut + 64 * len(test)]
    whole = data.token_windows(tokens, 64, 10**9)[1]  # test_tokens beyond the test text: all of it
    assert (len(whole) + 1) * 64 + 1 > len(tokens) - cut >= len(whole) * 64 + 1


def test_batches_draw_only_on_the_generator_and_an_epoch_repeats_no_window():
    def epoch(seed: int, global_seed: int) -> list[torch.Tensor]:
        problem = _problem(global_seed, steps_per_epoch=50)
        generator = torch.Generator().manual_seed(seed)
        state = torch.random.get_rng_state()
        batches = [problem.prepare(batch, generator)[0] for batch in problem.batches(generator)]
        assert torch.equal(torch.random.get_rng_state(), state)  # the global generator is not drawn on
        return batches

    first, again, other = epoch(5, 0), epoch(5, 1), epoch(6, 0)
    assert len(first) == 50 and all(b.shape == (8, 65) for b in first)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))
    drawn = torch.cat(list(_problem(steps_per_epoch=50).batches(torch.Generator().manual_seed(5))))
    assert len(set(drawn.tolist())) == 50 * 8  # without replacement within an epoch
    problem = _problem(steps_per_epoch=1000)  # more than the windows: each pass through them is complete
    order = torch.cat(list(problem.batches(torch.Generator().manual_seed(0))))
    passes = len(problem.train)
    assert sorted(order[:passes].tolist()) == list(range(passes))


def test_attention_is_causal():
    problem = _problem()
    model = problem.model
    tokens = problem.test[:2, :-1].clone()
    changed = tokens.clone()
    changed[0, 40] = (changed[0, 40] + 1) % 256
    with torch.no_grad():
        before, after = model(tokens), model(changed)
    torch.testing.assert_close(after[0, :40], before[0, :40], rtol=0, atol=1e-6)  # the past does not see the future
    assert (after[0, 40:] - before[0, 40:]).abs().amax(dim=-1).min() > 1e-4  # every later position sees the change
    torch.testing.assert_close(after[1], before[1], rtol=0, atol=1e-6)


def _mean_negative_log_likelihood(model: torch.nn.Module, windows: torch.Tensor) -> tuple[float, float]:
    """Per token, computed here from the logits: −log softmax at the next token; and the argmax's hit rate."""
    with torch.no_grad():
        logits = model(windows[:, :-1]).double()
    target = windows[:, 1:]
    log_z = logits.exp().sum(-1).log()
    picked = logits.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    return (log_z - picked).mean().item(), (logits.argmax(-1) == target).double().mean().item()


def test_the_loss_before_training_is_about_ln_256_nats_per_token():
    problem = _problem()
    reference = problem.reference_loss()
    nll, _ = _mean_negative_log_likelihood(problem.model, problem.train[:problem.eval_windows])
    assert reference == pytest.approx(nll, rel=1e-5)
    assert abs(reference - math.log(256)) < 0.05  # small initial logits: near uniform over the 256 bytes
    metrics = problem.evaluate()
    test_nll, accuracy = _mean_negative_log_likelihood(problem.model, problem.test)
    assert metrics["test_loss"] == pytest.approx(test_nll, rel=1e-5)
    assert metrics["test_accuracy"] == pytest.approx(accuracy, abs=1e-12)
    assert problem.test[:, 1:].numel() >= 16_000  # the default test text: 16,384 tokens cut into windows


def test_a_few_adam_steps_lower_the_loss():
    *epochs, summary = training.train(TASK, "adam", {"lr": 3e-3}, seed=0,
                                      protocol=_plan(epochs=2, batch_size=16, steps_per_epoch=15))
    final = summary.final
    assert summary.status == "complete" and len(epochs) == 2
    assert final["train_loss"] < final["initial_train_loss"] - 1.5  # from ~5.5 nats: the byte frequencies at least
    assert final["test_loss"] < final["initial_test_loss"] - 1.5
    assert final["test_accuracy"] > 10 * final["initial_test_accuracy"] and final["test_accuracy"] > 0.15


def test_the_options_scale_the_model():
    problem = _problem(layers=3, width=32, heads=2, context=16, test_tokens=1000)
    w, context, vocab = 32, 16, 256
    per_block = 2 * 2 * w + (w * 3 * w + 3 * w) + (w * w + w) + (w * 4 * w + 4 * w) + (4 * w * w + w)
    expected = vocab * w + context * w + 3 * per_block + 2 * w + w * vocab  # embeddings, blocks, final LN, head
    assert sum(p.numel() for p in problem.model.parameters()) == expected
    assert sum(p.numel() for p in _problem().model.parameters()) == 136_960  # the defaults, as documented
    assert "136,960 parameters" in TASKS[TASK].description
    assert len(problem.model.blocks) == 3 and problem.train.shape[1] == problem.test.shape[1] == 17
    assert len(problem.test) == (1000 - 1) // 16
    batch = next(problem.batches(torch.Generator().manual_seed(0)))
    assert problem.prepare(batch, None)[0].shape == (8, 17)
    # the heads split the attention: the same weights with 1 or 4 heads compute different functions
    one, four = (models.transformer_lm(256, 16, 32, 1, heads) for heads in (1, 4))
    four.load_state_dict(one.state_dict())
    tokens = problem.test[:2, :-1]
    with torch.no_grad():
        assert not torch.allclose(one(tokens), four(tokens), atol=1e-4)
    with pytest.raises(ValueError, match="width 30 must be a multiple of heads 4"):
        _problem(width=30, heads=4)
    with pytest.raises(ValueError, match="context 100000 needs"):
        _problem(context=100_000)


def test_a_population_of_a_scaled_model_trains_each_config_as_it_trains_alone():
    """Stacked under vmap (scaled_dot_product_attention included), each member as it trains alone."""
    plan = _plan(epochs=2, batch_size=4, layers=1, width=32, heads=2, context=32, steps_per_epoch=6, test_tokens=2000)
    members = [{"lr": 1e-3, "beta1": 0.9, "beta2": 0.999}, {"lr": 3e-3, "beta1": 0.9, "beta2": 0.95},
               {"lr": 1e-2, "beta1": 0.8, "beta2": 0.999}]  # one grid: the same keys (train_population's contract)
    together: dict[int, list] = {}
    for index, record in population.train_population(TASK, "adam", members, seed=1, protocol=plan):
        together.setdefault(index, []).append(record)
    for index, hparams in enumerate(members):
        alone = list(training.train(TASK, "adam", hparams, seed=1, protocol=plan))
        assert [r.epoch for r in together[index][:-1]] == [r.epoch for r in alone[:-1]] == [1, 2]
        for mine, theirs in zip(together[index][:-1], alone[:-1]):
            for key in ("train_loss", "test_loss", "test_accuracy"):
                assert mine.metrics[key] == pytest.approx(theirs.metrics[key], rel=1e-4), (index, key)
    finals = [together[i][-1].final["test_loss"] for i in range(3)]
    assert len(set(finals)) == 3  # the members differ
