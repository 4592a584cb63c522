"""Fast path vs plain path: a member of a batched group follows the reference trajectory (fp32, CPU)."""

import pytest
import torch

from msmbench.probe import MemberKey, MemberSpec, TrainData, protocol, train_batched, train_reference

TOL = 1e-5


@pytest.fixture(autouse=True)
def one_thread():
    """2 shared cores: OpenMP spinning with 2 threads under contention is slower than 1 thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def random_data(n: int, d: int, c: int, multilabel: bool, seed: int = 0) -> TrainData:
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(c, d, generator=g)

    def split(rows):
        y = torch.randint(0, c, (rows,), generator=g)
        x = centers[y] + 1.5 * torch.randn(rows, d, generator=g)
        if multilabel:
            y = (torch.rand(rows, c, generator=g) < 0.3).float()
            y[torch.arange(rows), torch.randint(0, c, (rows,), generator=g)] = 1.0
            x = y @ centers + 1.5 * torch.randn(rows, d, generator=g)
        return x, y

    return TrainData(*split(n), *split(n // 3))


def assert_same(batched, reference):
    for b, r in zip(batched, reference):
        assert b.spec == r.spec
        assert b.valid_history == pytest.approx(r.valid_history, abs=TOL)
        assert (b.best_epoch, b.last_epoch) == (r.best_epoch, r.last_epoch)
        assert b.state.keys() == r.state.keys()
        for k in r.state:
            torch.testing.assert_close(b.state[k], r.state[k], atol=TOL, rtol=0, msg=f"{b.spec} {k}")


def test_parity_multiclass_mixed_configs_and_early_stops():
    """hear-style grid (lr, init, dropout differ per member; 1 and 2 hidden layers in separate groups),
    random labels so that members stop at different checks (exercises the removal of stopped members)."""
    p = protocol("hear", hidden_dim=48, dropout=(0.1, 0.25), batch_size=64, max_epochs=10, check_every=1,
                 patience=2)
    data = random_data(300, 24, 5, multilabel=False)
    data.y_train = data.y_train[torch.randperm(len(data.y_train), generator=torch.Generator().manual_seed(1))]
    grid = p.grid()
    for depth, picks in ((1, [0, 3, 5, 6, 9, 12, 15]), (2, [0, 7, 10])):
        configs = [c for c in grid if c.hidden_layers == depth]
        specs = [MemberSpec(MemberKey(seed, configs[i].config_id, 0), configs[i])
                 for seed, i in enumerate(i % len(configs) for i in picks)]
        batched = train_batched(specs, data, 5, "multiclass", "top1_acc", p, progress=False)
        reference = [train_reference(s, data, 5, "multiclass", "top1_acc", p) for s in specs]
        assert_same(batched, reference)
        if depth == 1:
            assert len({o.last_epoch for o in batched}) > 1, "members should stop at different epochs"


def test_parity_multilabel_and_last_batch_of_one():
    p = protocol("paper", hidden_dim=40, batch_size=64, max_epochs=4, check_every=2, patience=5, lr=1e-3)
    data = random_data(257, 20, 6, multilabel=True)  # 257 = 4 * 64 + 1: the single-row batch is dropped
    specs = [MemberSpec(MemberKey(s, c.config_id, 2), c) for s in (0, 1) for c in p.grid()]
    batched = train_batched(specs, data, 6, "multilabel", "mAP", p, progress=False)
    reference = [train_reference(s, data, 6, "multilabel", "mAP", p) for s in specs]
    assert_same(batched, reference)
    assert all(int(o.state["1.num_batches_tracked"]) in (4 * 2, 4 * 4) for o in batched)


def test_members_do_not_depend_on_their_group():
    """A member trained alone and trained beside others gives the same model (streams keyed per member)."""
    p = protocol("paper", hidden_dim=32, batch_size=50, max_epochs=3, check_every=1, patience=5)
    data = random_data(200, 16, 4, multilabel=False)
    specs = [MemberSpec(MemberKey(s, c.config_id, 0), c) for s in (4, 5) for c in p.grid()]
    together = train_batched(specs, data, 4, "multiclass", "top1_acc", p, progress=False)
    alone = train_batched(specs[2:3], data, 4, "multiclass", "top1_acc", p, progress=False)
    assert_same(alone, together[2:3])
