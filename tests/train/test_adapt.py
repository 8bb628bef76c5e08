"""stages.adapt: the ID-row dropout while adapting."""

from types import SimpleNamespace

import torch

from distrec.models.towers import ItemTower
from distrec.train.stages import set_adapt_id_dropout


def run_with(rate):
    return SimpleNamespace(
        cfg=SimpleNamespace(stages=SimpleNamespace(adapt=SimpleNamespace(id_dropout=rate)))
    )


def test_adapt_id_dropout_replaces_the_pretrained_rate_and_none_keeps_it():
    torch.manual_seed(0)
    tower = ItemTower(8, 4, {"d": 20}, use_text=True, use_ids=True, id_dropout=0.5)
    torch.nn.init.normal_(tower.ids["d_d"].weight)
    model = SimpleNamespace(item_tower=tower)
    items, features = torch.arange(1, 21), torch.randn(20, 8)
    tower.train()
    set_adapt_id_dropout(run_with(None), model)
    assert tower.id_dropout == 0.5
    assert not torch.equal(tower("d", items, features), tower("d", items, features))
    set_adapt_id_dropout(run_with(0.0), model)
    assert tower.id_dropout == 0.0
    trained = tower("d", items, features)
    tower.eval()
    assert torch.equal(trained, tower("d", items, features))  # every ID row kept


def test_the_id_baseline_takes_its_own_score_and_temperature(synth_dir, tmp_path):
    from distrec.train.stages import new_model
    from tests.train.test_modes import make_run

    run = make_run(synth_dir, tmp_path, "cached", score="cosine", temperature=0.05)
    text_model = new_model(run)
    assert text_model.cosine and text_model.scale().item() == 20.0
    run.cfg.stages.id_baseline_score = "dot"
    run.cfg.stages.id_baseline_temperature = 0.5
    id_model = new_model(run, use_text=False)
    assert not id_model.cosine and id_model.scale().item() == 2.0
    assert new_model(run).cosine  # the text model keeps model.score
