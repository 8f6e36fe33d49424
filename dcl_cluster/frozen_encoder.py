"""Training on a frozen encoder's cached features: the module's side of the feature cache
(:mod:`dcl_cluster.data.feature_cache`). With ``trainable_blocks=0`` the encoder's features are
computed once, and the projector and cluster head train on them in seconds."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from dcl_cluster.data.feature_cache import encoder_frozen, weights_fingerprint

__all__ = ["FrozenEncoderFeatures"]


class FrozenEncoderFeatures:
    """Mixed into :class:`~dcl_cluster.module.DebiasedClusterModule` (a LightningModule with a
    ``backbone``): asks the datamodule for cached features when the encoder is frozen, and
    makes ``forward`` pass feature rows ``(B, F)`` through."""

    #: the fingerprint of the encoder weights whose cached features this run trains on
    _cached_weights: str | None = None

    @property
    def features_cached(self) -> bool:
        """Whether this run trains on cached features of a frozen encoder."""
        return self._cached_weights is not None

    def serve_frozen_features(self, dm: Any) -> None:
        """At ``setup("fit")``, before any loader: with a wholly frozen encoder and a datamodule
        whose ``feature_cache`` is on, compute (or find) the encoder's features of every image,
        on the training device, and train on them from then on; otherwise make sure the
        datamodule serves images."""
        if not hasattr(dm, "serve_cached_features"):
            return
        if not (encoder_frozen(self.backbone) and getattr(dm, "hparams", {}).get("feature_cache", False)):
            self._cached_weights = None
            dm.serve_images()
            return
        if "strong" in self.extra_views:
            users = [type(t).__name__ for t in self.objectives if "strong" in t.needs().views]
            raise ValueError(f"{', '.join(users)} need(s) the strong view, which augments images, but the frozen "
                             "encoder's features would be cached: set feature_cache: false in the data config "
                             "to train on images")
        trainer = self.trainer
        key = weights_fingerprint(self.backbone)
        device, backbone = trainer.strategy.root_device, self.backbone
        home = next(iter(backbone.parameters()), torch.empty(0)).device
        mode = backbone.training
        precision = str(trainer.precision)
        # "-true" precisions convert the module later, in strategy.setup: encode in float32 now
        mixed = not precision.endswith("-true")
        precision = precision if mixed else "32-true"

        def encode(x: Tensor) -> Tensor:
            context = trainer.precision_plugin.forward_context() if mixed else contextlib.nullcontext()
            with context:
                return self.forward(x.to(device))

        def any_rank(flag: bool) -> bool:
            return trainer.strategy.reduce_boolean_decision(flag, all=False)

        self._cached_weights = None  # forward runs the encoder while the cache is made
        backbone.to(device).eval()
        try:  # every process encodes its share of the batches; rank 0 writes the one file
            path = dm.serve_cached_features(encode, key, precision, refresh=lambda: self.serve_frozen_features(dm),
                                            rank=trainer.global_rank, world=trainer.world_size, any_rank=any_rank)
        finally:
            backbone.to(home).train(mode)
        self._cached_weights = key
        rank_zero_info(f"The encoder is frozen: training on its cached features ({path})")

    def check_cached_weights(self) -> None:
        """After a checkpoint restore: the encoder must still have the weights whose features
        were cached (a checkpoint of other weights would train on the wrong features)."""
        if self._cached_weights is not None and weights_fingerprint(self.backbone) != self._cached_weights:
            raise ValueError(f"the checkpoint's encoder weights (fingerprint {weights_fingerprint(self.backbone)}) "
                             f"differ from those the features were cached with ({self._cached_weights}); the "
                             "encoder is frozen: build the module with the checkpoint's weights, or set "
                             "feature_cache: false in the data config")

    def passes_features(self, x: Tensor) -> bool:
        """Whether ``x`` is a batch of cached feature rows ``(B, F)`` rather than images."""
        return self._cached_weights is not None and x.ndim == 2
