"""Lightning with AuditCallback: exact totals (closed form), validation in eval, both optimization modes."""
import warnings

import pytest
import torch

pl = pytest.importorskip("lightning.pytorch")
from auditor.integrations.lightning import AuditCallback  # noqa: E402

IN, HIDDEN, OUT = 16, 32, 4
TRAIN_SIZES = [8, 8, 8, 8, 4]        # limit_train_batches=5 over 36 samples: a short last batch
VAL_BATCHES, VAL_BATCH = 2, 8


def forward_per_sample():
    return 2 * IN * HIDDEN + 2 * HIDDEN * OUT


def train_per_sample():
    # Backward is twice the forward, less the first layer's input gradient (the data needs none).
    return 3 * forward_per_sample() - 2 * IN * HIDDEN


class TwoLayers(pl.LightningModule):
    def __init__(self, call_self=False):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(IN, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, OUT))
        self.call_self = call_self

    def forward(self, x):
        return self.net(x)

    def _loss(self, batch):
        x, y = batch
        out = self(x) if self.call_self else self.net(x)
        return torch.nn.functional.mse_loss(out, y)

    def training_step(self, batch, batch_idx):
        return self._loss(batch)

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self._loss(batch))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class ManualTwoLayers(TwoLayers):
    def __init__(self):
        super().__init__(call_self=True)
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        opt = self.optimizers()
        loss = self._loss(batch)
        self.manual_backward(loss)
        opt.step()
        opt.zero_grad()
        return loss


def loaders():
    g = torch.Generator().manual_seed(0)
    train = torch.utils.data.TensorDataset(torch.randn(36, IN, generator=g), torch.randn(36, OUT, generator=g))
    val = torch.utils.data.TensorDataset(torch.randn(32, IN, generator=g), torch.randn(32, OUT, generator=g))
    return (torch.utils.data.DataLoader(train, batch_size=8),
            torch.utils.data.DataLoader(val, batch_size=VAL_BATCH))


def run_fit(trainer, module, ckpt_path=None):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(num_workers|bottleneck|LightningModule.log|checkpoint).*")
        trainer.fit(module, *loaders(), ckpt_path=ckpt_path)
    return trainer


def fit(module, cb, *, callbacks=(), ckpt_path=None, **trainer_options):
    torch.manual_seed(0)
    trainer = pl.Trainer(limit_train_batches=5, limit_val_batches=VAL_BATCHES, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[cb, *callbacks],
                         **({"max_epochs": 1, "accelerator": "cpu", "logger": False} | trainer_options))
    return run_fit(trainer, module, ckpt_path)


# The sanity check (2 batches) and the end-of-epoch validation (2 batches): all evaluation.
VAL_FLOPS = 2 * VAL_BATCHES * VAL_BATCH * forward_per_sample()


@pytest.mark.parametrize("call_self", [False, True], ids=["step-calls-submodule", "step-calls-self"])
def test_fit_total_is_exact_and_validation_is_eval(call_self):
    module = TwoLayers(call_self)
    cb = AuditCallback()
    trainer = fit(module, cb)
    run = cb.audit
    assert run.total_flops == sum(TRAIN_SIZES) * train_per_sample()
    assert run.eval_flops == VAL_FLOPS
    assert run.steps == len(TRAIN_SIZES) == trainer.global_step
    assert run.counted_signatures == 3  # train batches of 8 and of 4, validation (no grad): once each
    # Everything is put back: no hooks, no routed step methods.
    assert "training_step" not in module.__dict__ and "validation_step" not in module.__dict__
    assert not module._forward_pre_hooks and not module._forward_hooks


def test_gradient_accumulation_is_exact():
    cb = AuditCallback()
    trainer = fit(TwoLayers(), cb, accumulate_grad_batches=2)
    assert cb.audit.total_flops == sum(TRAIN_SIZES) * train_per_sample()
    assert cb.audit.steps == 3 == trainer.global_step  # batches 2, 4 and the epoch's last


def test_manual_optimization_is_exact():
    cb = AuditCallback()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the backward inside the watched step is no unseen call
        warnings.filterwarnings("ignore", message=".*(num_workers|bottleneck|LightningModule.log|checkpoint|LeafSpec).*")
        trainer = fit(ManualTwoLayers(), cb)
    assert not cb.audit.uncovered
    assert cb.audit.total_flops == sum(TRAIN_SIZES) * train_per_sample()
    assert cb.audit.eval_flops == VAL_FLOPS
    assert cb.audit.steps == len(TRAIN_SIZES) == trainer.global_step


def test_import_auditor_does_not_import_lightning():
    import subprocess
    import sys

    code = ("import sys, auditor, auditor.integrations, auditor.integrations.huggingface; "
            "from auditor import ComputeAudit; "
            "print(any(m == 'lightning' or m.startswith(('lightning.', 'pytorch_lightning')) for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


class SaveEachEpoch(pl.Callback):
    """A checkpoint at the end of each training epoch, and the ledger's last step at that moment."""

    def __init__(self, folder, run_dir):
        self.folder, self.run_dir, self.paths, self.ledger_steps = folder, run_dir, [], []

    def on_train_epoch_end(self, trainer, pl_module):
        path = self.folder / f"epoch{trainer.current_epoch}.ckpt"
        trainer.save_checkpoint(path)
        self.paths.append(path)
        from auditor.record.ledger import verify_ledger
        self.ledger_steps.append(verify_ledger(self.run_dir).step)


class LateRestore(pl.strategies.SingleDeviceStrategy):
    """Restores the checkpoint after setup (and so after on_fit_start), as DeepSpeed does."""

    @property
    def restore_checkpoint_after_setup(self) -> bool:
        return True


@pytest.mark.parametrize("late, strip", [(False, False), (True, False), (False, True)],
                         ids=["restore-before-fit-start", "restore-after-setup", "no-callback-state"])
def test_fit_from_a_checkpoint_resumes_the_ledger_at_its_step(tmp_path, late, strip):
    from auditor.record.ledger import verify_ledger

    run_dir = tmp_path / "run"
    saver = SaveEachEpoch(tmp_path, run_dir)
    first = AuditCallback(run_dir=run_dir, flush_every_steps=1)
    fit(TwoLayers(), first, callbacks=[saver], max_epochs=2)  # two epochs of 5 steps; the ledger is at step 10
    assert saver.ledger_steps == [5, 10]
    epoch = sum(TRAIN_SIZES) * train_per_sample()
    assert first.audit.total_flops == 2 * epoch

    # The run is restarted from the first epoch's checkpoint: steps 6 to 10 are done again.
    if strip:  # a checkpoint saved without callback state
        ckpt = torch.load(saver.paths[0], weights_only=False)
        del ckpt["callbacks"]
        torch.save(ckpt, saver.paths[0])
    again = AuditCallback(run_dir=run_dir, flush_every_steps=1)
    options = {"strategy": LateRestore(torch.device("cpu"))} if late else {}
    trainer = fit(TwoLayers(), again, ckpt_path=saver.paths[0], max_epochs=2, **options)
    assert trainer.global_step == 10 and again.audit.steps == 10
    assert again.audit.base_flops == epoch and again.audit.total_flops == 2 * epoch
    report = verify_ledger(run_dir)
    assert report.ok and report.closed and report.step == 10 and report.total == 2 * epoch
    assert len(list(run_dir.glob("ledger.rolledback.*"))) == 1  # steps 6-10 of the first run, kept aside
    # The audit starts at the sanity check, after every strategy has restored the checkpoint.
    assert again.audit.eval_flops == VAL_FLOPS


def test_a_second_fit_goes_on_with_the_same_ledger(tmp_path):
    from auditor.record.ledger import verify_ledger

    run_dir = tmp_path / "run"
    cb = AuditCallback(run_dir=run_dir, flush_every_steps=1)
    trainer = fit(TwoLayers(), cb)
    assert verify_ledger(run_dir).closed and verify_ledger(run_dir).step == 5
    trainer.fit_loop.max_epochs = 2
    run_fit(trainer, trainer.lightning_module)
    epoch = sum(TRAIN_SIZES) * train_per_sample()
    report = verify_ledger(run_dir)
    assert trainer.global_step == 10 and cb.audit.total_flops == 2 * epoch
    assert report.ok and report.closed and report.step == 10 and report.total == 2 * epoch
    assert not list(run_dir.glob("ledger.rolledback.*"))  # nothing was redone


class Recorded(pl.loggers.Logger):
    """A logger that keeps what it is given."""

    def __init__(self):
        super().__init__()
        self.logged = []

    @property
    def name(self):
        return "recorded"

    @property
    def version(self):
        return 0

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def log_metrics(self, metrics, step=None):
        if "compute_flops" in metrics:
            self.logged.append((step, metrics["compute_flops"], metrics["compute_eval_flops"]))


def test_loggers_get_the_runs_figures_every_log_step_and_at_the_end():
    logger = Recorded()
    cb = AuditCallback()
    fit(TwoLayers(), cb, logger=logger, log_every_n_steps=2)
    per_sample = train_per_sample()
    done = [sum(TRAIN_SIZES[:n]) * per_sample for n in range(1, 6)]
    sanity = VAL_FLOPS // 2  # the sanity check's 2 batches; the epoch's validation comes after step 5
    assert logger.logged == [(2, done[1], sanity), (4, done[3], sanity), (5, done[4], VAL_FLOPS)]
    assert all(type(flops) is int for _, flops, _ in logger.logged)  # exact, not a float tensor
    assert logger.logged[-1][1] == cb.audit.total_flops


DDP_SCRIPT = """
import json, sys, warnings
warnings.filterwarnings("ignore")
sys.path.insert(0, {tests!r})
import torch
import torch.distributed as dist
from test_integration_lightning import AuditCallback, Recorded, TwoLayers, loaders, pl

cb, logger = AuditCallback(run_dir={out!r} + "/run", flush_every_steps=2), Recorded()
torch.manual_seed(0)
trainer = pl.Trainer(max_epochs=1, accelerator="cpu", devices=2, strategy="ddp", limit_val_batches=2, logger=logger,
                     log_every_n_steps=1, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, callbacks=[cb])
trainer.fit(TwoLayers(), *loaders())
ledger = None
if trainer.is_global_zero:
    from auditor.record.ledger import verify_ledger
    ledger = verify_ledger({out!r} + "/run").total
with open({out!r} + f"/rank{{trainer.global_rank}}.json", "w") as fh:
    json.dump({{"world": trainer.world_size, "total": cb.audit.total_flops, "eval": cb.audit.eval_flops,
               "steps": cb.audit.steps, "logged": logger.logged, "ledger": ledger}}, fh)
"""


@pytest.mark.slow
def test_ddp_on_two_ranks_logs_the_sum_of_both(tmp_path):
    """torchrun, 2 CPU processes (gloo DDP): 36 samples split 18 a rank, batches of 8, 8 and 2."""
    from torchrun import run_on_two_ranks

    ranks = run_on_two_ranks(tmp_path, DDP_SCRIPT)
    rows = [2 * 8, 2 * 16, 2 * 18]        # both ranks' training rows after each step
    val = 2 * 2 * VAL_BATCH * forward_per_sample()  # 2 ranks x 2 batches of 8, once
    for r in ranks:
        assert r["world"] == 2 and r["steps"] == 3
        assert r["total"] == rows[-1] * train_per_sample() and r["eval"] == 2 * val
    expected = [[s + 1, n * train_per_sample(), val] for s, n in enumerate(rows)] + \
        [[3, rows[-1] * train_per_sample(), 2 * val]]  # the sanity check; the end of fit adds the epoch's
    assert ranks[0]["logged"] == expected and ranks[1]["logged"] == []  # loggers log on rank 0
    assert ranks[0]["ledger"] == expected[-1][1]
