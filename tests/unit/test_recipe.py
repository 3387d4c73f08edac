"""The recipe search's selection logic, with a scripted trainer in place of a model.

The unit here is the choice (ranking, ties, divergence, what is scored), so the trainer that
would fine-tune a real model is injected: it returns scripted losses and records what it was
given. Training a real model is tests/integration/test_lora_finetune.py's job.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from llmops_dagster.evaluate.golden import load_golden
from llmops_dagster.train.dataset import SFTDataset, SFTExample
from llmops_dagster.train.lora import LoraParams, TrainingError
from llmops_dagster.train.recipe import CandidateScore, Recipe, select_recipe

pytestmark = pytest.mark.unit


def _example(id_: str) -> SFTExample:
    return SFTExample(
        id=id_,
        question=f"question {id_}?",
        prompt=f"<prompt {id_}>",
        completion=f"answer {id_}",
        reference_answer=f"answer {id_}",
        context_chunk_ids=(),
        cited_chunk_ids=(),
    )


def _dataset(n_train: int = 6, n_validation: int = 3) -> SFTDataset:
    return SFTDataset(
        train=[_example(f"train-{i}") for i in range(n_train)],
        validation=[_example(f"val-{i}") for i in range(n_validation)],
        digest="d" * 64,
        source="data/train/qa.jsonl",
        source_digest="s" * 64,
        prompt_name="rag_answer",
        prompt_version="1",
        seed=13,
        val_fraction=0.3,
    )


@dataclass
class ScriptedTrainer:
    """Returns each candidate's scripted score (keyed by learning rate) and records its calls."""

    scores: dict[float, CandidateScore]
    calls: list[tuple[object, list[str], list[str], LoraParams]] = field(default_factory=list)

    def __call__(
        self,
        base: object,
        train: Sequence[SFTExample],
        validation: Sequence[SFTExample],
        params: LoraParams,
    ) -> CandidateScore:
        self.calls.append((base, [e.id for e in train], [e.id for e in validation], params))
        return self.scores[params.learning_rate]


def _recipes(*rates: float) -> list[Recipe]:
    return [Recipe(learning_rate=lr) for lr in rates]


def _search(trainer: ScriptedTrainer, candidates: list[Recipe], dataset: SFTDataset | None = None):
    return select_recipe(
        object, dataset or _dataset(), None, candidates, 4, trainer=trainer, max_seq_len=256
    )


def test_candidates_are_ranked_by_validation_loss_lowest_first() -> None:
    trainer = ScriptedTrainer(
        {
            1e-3: CandidateScore(val_loss=2.0, steps=4),
            3e-4: CandidateScore(val_loss=1.5, steps=4),
            1e-4: CandidateScore(val_loss=1.8, steps=4),
        }
    )
    search = _search(trainer, _recipes(1e-3, 3e-4, 1e-4))
    assert [(c.rank, c.recipe.learning_rate, c.val_loss) for c in search.ranking] == [
        (1, 3e-4, 1.5),
        (2, 1e-4, 1.8),
        (3, 1e-3, 2.0),
    ]
    assert search.winner.recipe == Recipe(learning_rate=3e-4)
    assert [c.steps for c in search.ranking] == [4, 4, 4]
    assert search.search_steps == 4 and search.n_validation == 3
    assert all(c.diverged is None and c.seconds >= 0 for c in search.ranking)


def test_equal_validation_losses_keep_the_earlier_candidate() -> None:
    scores = {1e-3: CandidateScore(1.25, 4), 3e-4: CandidateScore(1.25, 4)}
    first = _search(ScriptedTrainer(scores), _recipes(1e-3, 3e-4))
    assert [c.recipe.learning_rate for c in first.ranking] == [1e-3, 3e-4]
    swapped = _search(ScriptedTrainer(scores), _recipes(3e-4, 1e-3))
    assert [c.recipe.learning_rate for c in swapped.ranking] == [3e-4, 1e-3]


def test_diverged_candidates_rank_last_with_the_reason() -> None:
    trainer = ScriptedTrainer(
        {
            1e-2: CandidateScore(val_loss=math.nan, steps=4, train_losses=(3.0, 2.0, 1.0, 0.5)),
            5e-3: CandidateScore(val_loss=0.9, steps=4, train_losses=(3.0, math.inf, 2.0, 1.0)),
            1e-3: CandidateScore(val_loss=2.5, steps=4, train_losses=(3.0, 2.9, 2.8, 2.7)),
        }
    )
    search = _search(trainer, _recipes(1e-2, 5e-3, 1e-3))
    # The inf-training-loss candidate's 0.9 would win on the number alone: divergence outranks it.
    assert [(c.recipe.learning_rate, c.diverged) for c in search.ranking] == [
        (1e-3, None),
        (1e-2, "validation loss is nan"),
        (5e-3, "training loss is inf at step 2"),
    ]
    assert search.winner.val_loss == 2.5
    assert [row["val_loss"] for row in search.table()] == [2.5, None, None]


def test_a_search_where_every_candidate_diverged_raises_naming_them() -> None:
    trainer = ScriptedTrainer(
        {1e-2: CandidateScore(math.inf, 4), 1e-1: CandidateScore(math.nan, 4)}
    )
    with pytest.raises(TrainingError, match=r"every candidate diverged.*lr0\.01: validation loss"):
        _search(trainer, _recipes(1e-2, 1e-1))


def test_only_the_datasets_validation_split_is_scored_never_golden_items() -> None:
    dataset = _dataset(n_train=5, n_validation=2)
    golden_ids = {item.id for item in load_golden().items}
    trainer = ScriptedTrainer({1e-3: CandidateScore(1.0, 4), 3e-4: CandidateScore(2.0, 4)})
    _search(trainer, _recipes(1e-3, 3e-4), dataset)
    assert len(trainer.calls) == 2
    for _, train_ids, validation_ids, _ in trainer.calls:
        assert train_ids == [e.id for e in dataset.train]
        assert validation_ids == ["val-0", "val-1"]
        assert not golden_ids & {*train_ids, *validation_ids}


def test_every_candidate_trains_a_fresh_base_for_search_steps_with_one_seed() -> None:
    bases: list[object] = []

    def loader() -> object:
        bases.append(object())
        return bases[-1]

    trainer = ScriptedTrainer({1e-3: CandidateScore(1.0, 3), 3e-4: CandidateScore(2.0, 3)})
    candidates = [
        Recipe(r=8, alpha=16, target_modules=("q_proj", "v_proj"), learning_rate=1e-3),
        Recipe(r=16, alpha=32, target_modules=("q_proj", "k_proj"), learning_rate=3e-4),
    ]
    select_recipe(loader, _dataset(), None, candidates, 3, seed=7, batch_size=2, trainer=trainer)
    assert [call[0] for call in trainer.calls] == bases and bases[0] is not bases[1]
    params = [call[3] for call in trainer.calls]
    assert [(p.r, p.alpha, p.target_modules, p.learning_rate) for p in params] == [
        (8, 16, ("q_proj", "v_proj"), 1e-3),
        (16, 32, ("q_proj", "k_proj"), 3e-4),
    ]
    assert {(p.max_steps, p.seed, p.batch_size) for p in params} == {(3, 7, 2)}


def test_a_dataset_without_validation_split_is_refused_before_training() -> None:
    trainer = ScriptedTrainer({1e-3: CandidateScore(1.0, 4)})
    with pytest.raises(TrainingError, match=r"validation split.*val_fraction > 0"):
        _search(trainer, _recipes(1e-3), _dataset(n_validation=0))
    assert trainer.calls == []


def test_bad_candidates_are_refused_before_any_trains() -> None:
    trainer = ScriptedTrainer({1e-3: CandidateScore(1.0, 4)})
    with pytest.raises(TrainingError, match=r"candidate r0-a16-q_proj\+v_proj-lr0\.001: .*r=0"):
        _search(trainer, [Recipe(learning_rate=1e-3), Recipe(r=0, learning_rate=1e-3)])
    with pytest.raises(TrainingError, match=r"unique; repeated: \['same'\]"):
        _search(trainer, [Recipe(name="same"), Recipe(r=16, name="same")])
    with pytest.raises(TrainingError, match=r"candidates is empty"):
        _search(trainer, [])
    with pytest.raises(TrainingError, match=r"search_steps=0"):
        select_recipe(object, _dataset(), None, _recipes(1e-3), 0, trainer=trainer)
    assert trainer.calls == []


def test_recipe_label_is_its_name_or_derived_from_its_knobs() -> None:
    assert Recipe(
        r=16, alpha=32, target_modules=("q_proj", "o_proj"), learning_rate=3e-4
    ).label == ("r16-a32-q_proj+o_proj-lr0.0003")
    assert Recipe(name="wide").label == "wide"


def test_validation_limit_scores_every_candidate_on_one_seeded_sample_of_the_split() -> None:
    dataset = _dataset(n_validation=10)
    trainer = ScriptedTrainer({1e-3: CandidateScore(1.0, 4), 3e-4: CandidateScore(2.0, 4)})
    search = select_recipe(
        object, dataset, None, _recipes(1e-3, 3e-4), 4, validation_limit=4, trainer=trainer
    )
    first, second = (call[2] for call in trainer.calls)
    assert first == second and len(first) == 4 and search.n_validation == 4
    split = [e.id for e in dataset.validation]
    assert first == [i for i in split if i in first]  # a subset, in the split's order
    assert first != split[:4]  # sampled, not the id-sorted head
    again = ScriptedTrainer(trainer.scores)
    select_recipe(object, dataset, None, _recipes(1e-3), 4, validation_limit=4, trainer=again)
    assert again.calls[0][2] == first  # the seed fixes the sample
    whole = ScriptedTrainer(trainer.scores)
    select_recipe(object, dataset, None, _recipes(1e-3), 4, validation_limit=10, trainer=whole)
    assert whole.calls[0][2] == split
    with pytest.raises(TrainingError, match=r"validation_limit=0"):
        select_recipe(object, dataset, None, _recipes(1e-3), 4, validation_limit=0, trainer=whole)
