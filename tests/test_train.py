"""The training loop: files, exact resume after an interruption, refusals, divergence, checkpoints."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from preimage.errors import PreimageError
from preimage.train import fit, load_checkpoint


class ToyTask:
    """Noisy linear regression with dropout: every source of randomness the loop has to replay."""

    kind = "toy"

    def __init__(self, *, lr: float = 0.05, fail_at: int | None = None, nan_at: int | None = None) -> None:
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.2), nn.Linear(8, 1))
        self.opt = torch.optim.Adam(self.net.parameters(), lr=lr)
        self.lr = lr
        gen = torch.Generator().manual_seed(1)
        self.x = torch.randn(64, 4, generator=gen)
        self.y = self.x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
        self.fail_at, self.nan_at, self.calls = fail_at, nan_at, 0
        self.ended: list[int] = []

    def modules(self):
        return {"net": self.net}

    def optimizers(self):
        return {"opt": self.opt}

    def config(self):
        return {"lr": self.lr}

    def num_batches(self) -> int:
        return 4

    def batches(self, epoch, generator):
        order = torch.randperm(64, generator=generator)
        return [order[i:i + 16] for i in range(0, 64, 16)]

    def train_step(self, idx, generator):
        self.calls += 1
        if self.fail_at == self.calls:
            raise KeyboardInterrupt
        noise = 0.1 * torch.randn(len(idx), 1, generator=generator)
        loss = ((self.net(self.x[idx]) - self.y[idx] - noise) ** 2).mean()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        value = loss.item()
        return {"mse": float("nan") if self.nan_at == self.calls else value}

    def end_epoch(self, epoch, out: Path):
        self.ended.append(epoch)
        (out / f"epoch_{epoch}.txt").write_text(str(epoch))
        return {"val": float(((self.net(self.x) - self.y) ** 2).mean())}


def weights(task: ToyTask) -> list[torch.Tensor]:
    return [p.detach().clone() for p in task.net.parameters()]


def test_fit_writes_checkpoint_history_curves_and_manifest(tmp_path) -> None:
    task = ToyTask()
    r = fit(task, tmp_path / "run", epochs=3, seed=7)
    assert r.status == "done" and r.epochs_done == 3 and r.exit_code == 0
    names = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"checkpoint.pt", "history.json", "losses.png", "manifest.json"} <= names
    hist = json.loads((tmp_path / "run" / "history.json").read_text())
    assert len(hist["steps"]) == 12 and [e["epoch"] for e in hist["epochs"]] == [1, 2, 3]
    assert hist["epochs"][-1]["mse"] < hist["epochs"][0]["mse"] and "val" in hist["epochs"][0]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "done" and manifest["config"] == {"lr": 0.05} and manifest["seed"] == 7
    ckpt = load_checkpoint(tmp_path / "run", kind="toy")
    assert ckpt["epoch"] == 3 and set(ckpt["modules"]) == {"net"}


def test_interrupted_run_resumes_to_the_same_weights_as_an_uninterrupted_one(tmp_path) -> None:
    whole = ToyTask()
    fit(whole, tmp_path / "a", epochs=4, seed=3)

    broken = ToyTask(fail_at=10)  # Ctrl-C in the middle of epoch 3
    r = fit(broken, tmp_path / "b", epochs=4, seed=3)
    assert r.status == "interrupted" and r.exit_code == 130 and r.epochs_done == 2
    assert "resume after epoch 2" in r.message
    resumed = ToyTask()  # a new process: fresh weights, restored from the checkpoint
    r = fit(resumed, tmp_path / "b", epochs=4, seed=3)
    assert r.status == "done" and r.resumed_from == 2 and resumed.ended == [3, 4]
    for a, b in zip(weights(whole), weights(resumed)):
        assert torch.equal(a, b)
    assert len(r.history["steps"]) == 16


def test_more_epochs_continue_an_earlier_run(tmp_path) -> None:
    whole = ToyTask()
    fit(whole, tmp_path / "a", epochs=3)
    first = ToyTask()
    fit(first, tmp_path / "b", epochs=1)
    more = ToyTask()
    assert fit(more, tmp_path / "b", epochs=3).resumed_from == 1
    assert all(torch.equal(a, b) for a, b in zip(weights(whole), weights(more)))
    again = fit(ToyTask(), tmp_path / "b", epochs=2)
    assert again.status == "done" and "nothing to do" in again.message


def test_other_settings_or_foreign_folders_are_refused_unless_forced(tmp_path) -> None:
    fit(ToyTask(), tmp_path / "run", epochs=1)
    with pytest.raises(PreimageError, match="other settings .*lr"):
        fit(ToyTask(lr=0.1), tmp_path / "run", epochs=1)
    with pytest.raises(PreimageError, match="other settings .*seed"):
        fit(ToyTask(), tmp_path / "run", epochs=1, seed=5)
    assert fit(ToyTask(lr=0.1), tmp_path / "run", epochs=1, force=True).status == "done"
    assert load_checkpoint(tmp_path / "run")["config"] == {"lr": 0.1}
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_bytes(b"x")
    with pytest.raises(PreimageError, match="not empty"):
        fit(ToyTask(), foreign, epochs=1)
    with pytest.raises(PreimageError, match="epochs"):
        fit(ToyTask(), tmp_path / "x", epochs=0)


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path) -> None:
    r = fit(ToyTask(nan_at=6), tmp_path / "run", epochs=3)  # epoch 2, step 2
    assert r.status == "diverged" and r.exit_code == 1 and r.epochs_done == 1
    assert "mse loss became nan at epoch 2, step 2" in r.message
    assert load_checkpoint(tmp_path / "run")["epoch"] == 1
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["status"] == "diverged"


def test_load_checkpoint_says_what_is_wrong_in_one_line(tmp_path) -> None:
    with pytest.raises(PreimageError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(PreimageError, match="not a readable preimage checkpoint"):
        load_checkpoint(text)
    other = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(2)}, other)
    with pytest.raises(PreimageError, match="not a preimage checkpoint"):
        load_checkpoint(other)
    fit(ToyTask(), tmp_path / "run", epochs=1)
    with pytest.raises(PreimageError, match="holds a 'toy' model, not a 'gan' one"):
        load_checkpoint(tmp_path / "run", kind="gan")
