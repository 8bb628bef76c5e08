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
