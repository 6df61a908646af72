"""The training order: DistributedSampler shuffles by default; --balanced-batches deals every batch
with equal numbers of images per class, on every rank, reproducibly per (seed, epoch)."""

import torch

from cpixelcnn.data import Dataset
from cpixelcnn.training.batches import TrainingData, balanced_order


def test_balanced_order_is_a_permutation_dealt_one_image_per_class_per_round():
    labels = torch.tensor([0] * 12 + [1] * 12 + [2] * 5 + [3] * 12)
    order = balanced_order(labels, torch.Generator().manual_seed(0))
    assert sorted(order) == list(range(len(labels)))
    for start in range(0, 4 * 5, 4):  # while class 2 lasts, every 4 consecutive images are the 4 classes
        assert sorted(labels[order[start : start + 4]].tolist()) == [0, 1, 2, 3]
    assert order != balanced_order(labels, torch.Generator().manual_seed(1))


def training_data(labels: torch.Tensor, world: int, rank: int, per_rank: int) -> TrainingData:
    images = torch.zeros(len(labels), 1, 2, 2, dtype=torch.uint8)
    sampler = torch.utils.data.DistributedSampler(range(len(labels)), num_replicas=world, rank=rank, shuffle=True, seed=3, drop_last=True)
    return TrainingData(Dataset(images, labels, ["a", "b", "c", "d"]), sampler, per_rank, len(sampler) // per_rank, balanced=True)


def test_every_ranks_share_of_every_batch_is_balanced_and_the_ranks_cover_the_batch():
    labels = torch.arange(64) % 4
    ranks = [training_data(labels, world=2, rank=r, per_rank=8) for r in range(2)]
    for epoch in (0, 1):
        orders = [d.epoch_order(epoch) for d in ranks]
        assert all(len(o) == d.steps_per_epoch * d.per_rank for o, d in zip(orders, ranks))
        for position in range(ranks[0].steps_per_epoch):
            shares = [d.batch(o, position) for d, o in zip(ranks, orders)]
            for share in shares:
                assert torch.bincount(labels[share], minlength=4).tolist() == [2, 2, 2, 2]
            assert len(set(torch.cat(shares).tolist())) == 16  # no image twice in a global batch
        assert sorted(orders[0] + orders[1]) == list(range(64))
    assert ranks[0].epoch_order(0) == ranks[0].epoch_order(0) and ranks[0].epoch_order(0) != ranks[0].epoch_order(1)


def test_training_with_balanced_batches_runs_and_resumes_exactly(tmp_path):
    from cpixelcnn.training import TrainConfig, train

    tiny = dict(
        data="demo", image_size=8, nr_resnet=1, nr_filters=4, nr_logistic_mix=2, batch_size=8, balanced_batches=True, log_every=1, val_data="none"
    )
    whole = train(TrainConfig(out=str(tmp_path / "whole"), max_steps=4, **tiny), log=lambda *a: None)
    train(TrainConfig(out=str(tmp_path / "split"), max_steps=2, **tiny), log=lambda *a: None)
    resumed = train(TrainConfig(out=str(tmp_path / "split"), max_steps=4, resume=True, **tiny), log=lambda *a: None)
    assert resumed["train_bpd"] == whole["train_bpd"]


def _counting_loads(monkeypatch) -> list[tuple]:
    """Every split read from a data source (the data layer's one reader of a split), as (data, split)."""
    from cpixelcnn.data import registry

    loads, real = [], registry._load_split

    def counted(data, request):
        loads.append((data, request.split))
        return real(data, request)

    monkeypatch.setattr(registry, "_load_split", counted)
    return loads


TINY = dict(image_size=4, in_channels=1, nr_resnet=1, nr_filters=4, nr_logistic_mix=2, batch_size=8, device="cpu", val_limit=20)


def test_a_run_holding_images_out_loads_its_training_split_once(tmp_path, monkeypatch):
    """--val-split N: the training images and the N held out come from one load, as before two."""
    from cpixelcnn.data import load_dataset
    from cpixelcnn.training import TrainConfig, Trainer

    loads = _counting_loads(monkeypatch)
    trainer = Trainer(TrainConfig(data="demo", out=str(tmp_path / "run"), val_split="40", max_steps=2, **TINY), log=lambda *a: None)
    trainer.fit()
    assert loads == [("demo", "train")]
    whole = load_dataset("demo", "train", 4, 1)
    assert len(trainer.data) + 40 == len(whole) and len(trainer.val) == 20  # the rest trains; 20 of the 40 validate (--val-limit)


def test_a_per_class_run_loads_its_training_split_once_for_all_members(tmp_path, monkeypatch):
    from cpixelcnn.training import TrainConfig, train

    loads = _counting_loads(monkeypatch)
    result = train(TrainConfig(data="demo", out=str(tmp_path / "run"), per_class=True, val_split="40", max_steps=8, **TINY), log=lambda *a: None)
    assert len(result["members"]) == 4 and loads == [("demo", "train")]


def test_the_trainers_state_is_declared_in_init(tmp_path):
    """Every attribute the trainer keeps exists from its constructor on: setup and the loop fill them, never add one."""
    from cpixelcnn.training import TrainConfig, Trainer

    trainer = Trainer(TrainConfig(data="demo", out=str(tmp_path / "run"), val_data="none", max_steps=2, **TINY), log=lambda *a: None)
    declared = set(vars(trainer))
    trainer.fit()
    assert set(vars(trainer)) == declared, sorted(set(vars(trainer)) - declared)
