"""One optimisation step on 2 DDP processes (CPU, gloo) leaves the parameters one process
leaves on the global batch: gathered negatives, DEC frequencies, cluster prior and anchor
loss included. Uses ddp_spawn: plain ``ddp`` re-runs pytest as rank 1 and hangs."""

import lightning.pytorch as pl
import pytest
import torch
from toy_data import NoBatchNormNet, ToyDataModule

from dcl_cluster import DebiasedClusterModule
from dcl_cluster.nn import MLPProjectionHead


def one_step(devices, batch_size, preset="dcl_cluster"):
    pl.seed_everything(0)
    module = DebiasedClusterModule.from_preset(
        preset, backbone=NoBatchNormNet(), projector=MLPProjectionHead(16, 32, 8, batch_norm=False),
        in_channels=1, input_size=8, num_clusters=4, warmup_epochs=0,
        optimizer="sgd", lr=0.5, momentum=0.0, weight_decay=0.0, cosine=False,
    )
    trainer = pl.Trainer(accelerator="cpu", devices=devices, strategy="ddp_spawn" if devices > 1 else "auto",
                         max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    # 16 training samples = one global batch: whatever order DDP's sampler draws, the same samples
    # make the step in both runs
    trainer.fit(module, datamodule=ToyDataModule(batch_size=batch_size, num_samples=16))
    return before, module.state_dict()


@pytest.mark.parametrize("preset", ["dcl_cluster", "p2ot"])  # p2ot: one transport plan over the global batch
def test_ddp_step_equals_single_process_on_global_batch(preset):
    start, single = one_step(devices=1, batch_size=16, preset=preset)
    _, ddp = one_step(devices=2, batch_size=8, preset=preset)
    moved = [k for k in single if "backbone" in k and not torch.equal(single[k], start[k])]
    assert moved, "the step must change the backbone for the comparison to mean anything"
    for name, value in single.items():
        got = ddp[name]
        if name.endswith(".bank"):  # the global batch's rows in rank order, not the sampler's: same rows
            got, value = got[got[:, 0].argsort()], value[value[:, 0].argsort()]
        torch.testing.assert_close(got, value, rtol=1e-5, atol=1e-6, msg=f"{name} differs under DDP")
