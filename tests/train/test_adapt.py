"""stages.adapt: the ID-row dropout while adapting."""

from types import SimpleNamespace

import torch

from distrec.config.schema import ModelConfig
from distrec.models.io import ItemBatch
from distrec.models.towers import ItemTower
from distrec.train.stages.adapt import set_adapt_id_dropout


def run_with(rate):
    stages = SimpleNamespace(adapt=SimpleNamespace(id_dropout=rate))
    return SimpleNamespace(ws=SimpleNamespace(cfg=SimpleNamespace(stages=stages)))


def test_adapt_id_dropout_replaces_the_pretrained_rate_and_none_keeps_it():
    torch.manual_seed(0)
    cfg = ModelConfig(dim=8, user_tower={"heads": 2}, item_id_embeddings=True, id_dropout=0.5)
    tower = ItemTower(cfg, 8, {"d": 20})
    torch.nn.init.normal_(tower.ids["d_d"].weight)
    model = SimpleNamespace(item_tower=tower)
    batch = ItemBatch("d", torch.arange(1, 21), features=torch.randn(20, 8))
    tower.train()
    set_adapt_id_dropout(run_with(None), model)
    assert tower.id_dropout == 0.5
    assert not torch.equal(tower(batch), tower(batch))
    set_adapt_id_dropout(run_with(0.0), model)
    assert tower.id_dropout == 0.0
    trained = tower(batch)
    tower.eval()
    assert torch.equal(trained, tower(batch))  # every ID row kept


def test_the_id_baseline_takes_its_own_score_and_temperature(synth_dir, tmp_path):
    from distrec.train.stages.baselines import id_baseline_model
    from distrec.train.stages.pipeline import Pipeline, new_model
    from tests.train.test_modes import make_run

    run = make_run(synth_dir, tmp_path, "cached", score="cosine", temperature=0.05)
    text_model = new_model(run)
    assert text_model.cosine and text_model.scale().item() == 20.0
    run.cfg.stages.id_baseline_score = "dot"
    run.cfg.stages.id_baseline_temperature = 0.5
    id_model = id_baseline_model(Pipeline(run))
    assert not id_model.cosine and id_model.scale().item() == 2.0
    assert not id_model.item_tower.reads_text  # its own item tower: ID rows only
    assert new_model(run).cosine  # the text model keeps model.score
