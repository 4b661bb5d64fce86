"""The hyper-parameter search: every tunable model gets the same budget on the validation split, the best
trial of each is chosen, and the evaluation reads the choice back."""

from __future__ import annotations

from pathlib import Path

from tests.training.test_candidate_eval import CONFIG, catalog, interactions
from training import tuning
from training.evaluation import temporal_split
from training.peers import default_peers


def test_every_model_gets_the_same_budget_and_its_best_trial_is_chosen(tmp_path: Path) -> None:
    train, validation = temporal_split(interactions())
    found = tuning.tune(train, validation, catalog(), CONFIG, budget=2, log=lambda _: None)
    models = [*tuning.PEER_SPACE, tuning.OURS]
    assert {t["model"] for t in found["trials"]} == set(models)
    for name in models:
        trials = [t for t in found["trials"] if t["model"] == name]
        assert len(trials) == 2, name
        best = max(trials, key=lambda t: t["objective"])
        assert found["chosen"][name] == best["params"]
        for trial in trials:
            assert trial["objective"] == sum(trial[m] for m in tuning.OBJECTIVE) / len(tuning.OBJECTIVE)

    tuning.save(found, tmp_path / "tuned.json")
    chosen = tuning.load(tmp_path / "tuned.json")
    assert chosen == found["chosen"]
    quotas, weights = tuning.ours_from(chosen)
    assert quotas.similar_items == chosen[tuning.OURS]["quotas"]["similar_items"]
    ease = default_peers(0, chosen)[2]
    assert ease.l2 == chosen["ease"]["l2"]  # type: ignore[attr-defined]
    assert tuning.load(tmp_path / "missing.json") == {}
