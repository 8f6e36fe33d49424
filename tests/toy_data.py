"""A tiny long-tailed image datamodule with deterministic views, for module tests that must
not depend on augmentation randomness (DDP equality, resume)."""

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from dcl_cluster.data.datasets import SeededEpochSampler

COUNTS = [40, 20, 10, 6]


def toy_images(counts=COUNTS, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    prototypes = torch.randn(len(counts), 1, size, size, generator=g)
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    images = prototypes[labels] + 0.3 * torch.randn(len(labels), 1, size, size, generator=g)
    views_a = images + 0.2 * torch.randn(images.shape, generator=g)
    views_b = images + 0.2 * torch.randn(images.shape, generator=g)
    return images, views_a, views_b, labels


class ToyViews(Dataset):
    def __init__(self, clean_view=True, num_samples=None):
        keep = torch.linspace(0, len(toy_images()[3]) - 1, num_samples).long() if num_samples else slice(None)
        self.images, self.a, self.b, self.labels = (t[keep] for t in toy_images())
        self.clean_view = clean_view

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        views = [self.a[i], self.b[i]] + ([self.images[i]] if self.clean_view else [])
        return views, self.labels[i], i


class ToyEval(Dataset):
    def __init__(self, with_index):
        self.images, _, _, self.labels = toy_images()
        self.with_index = with_index

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return (self.images[i], self.labels[i], i) if self.with_index else (self.images[i], self.labels[i])


class ToyDataModule(pl.LightningDataModule):
    """Exposes what DebiasedClusterModule reads: num_channels, image_size, num_classes,
    train_class_counts, hparams.clean_view and train_eval_dataloader()."""

    def __init__(self, batch_size: int = 16, clean_view: bool = True, shuffle: bool = False,
                 num_samples: int | None = None):
        super().__init__()
        self.save_hyperparameters()
        self.num_channels, self.image_size, self.num_classes = 1, 8, len(COUNTS)
        self.train_class_counts = list(COUNTS)

    def train_dataloader(self):
        data = ToyViews(self.hparams.clean_view, self.hparams.num_samples)
        sampler = SeededEpochSampler(len(data), seed=0) if self.hparams.shuffle else None
        return DataLoader(data, batch_size=self.hparams.batch_size, sampler=sampler, drop_last=True)

    def train_eval_dataloader(self):
        return DataLoader(ToyEval(with_index=True), batch_size=32)

    def val_dataloader(self):
        return DataLoader(ToyEval(with_index=False), batch_size=32)

    test_dataloader = val_dataloader


class NoBatchNormNet(nn.Module):
    """A backbone without batch statistics, so a DDP step equals a single-process step."""

    def __init__(self, in_channels: int = 1, width: int = 8):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                                 nn.Flatten(), nn.Linear(4 * width, 16))
        self.out_dim = 16

    def forward(self, x):
        return self.net(x)
