"""The ``dcl-cluster`` command: LightningCLI over DebiasedClusterModule and
LongTailDataModule, with the clustering evaluator always attached and a closing table
of the final model's clustering scores after ``fit``.

    dcl-cluster fit --config examples/configs/digits_lt.yaml
    dcl-cluster fit --config examples/configs/data/cifar10_lt.yaml \\
                    --config examples/configs/method/dcl_cluster.yaml
"""

from __future__ import annotations

from lightning.pytorch.cli import LightningCLI

from dcl_cluster.callbacks import ClusteringEvaluator
from dcl_cluster.data import LongTailDataModule
from dcl_cluster.module import DebiasedClusterModule
from dcl_cluster.report import final_report

__all__ = ["DCLClusterCLI", "main"]


class DCLClusterCLI(LightningCLI):
    """LightningCLI with ``--evaluator.*`` options for the always-on ClusteringEvaluator."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(ClusteringEvaluator, "evaluator")
        parser.add_argument(
            "--report", type=bool, default=True,
            help="After fit, evaluate the final model on the long-tailed train set and the held-out set "
            "and print NMI / ACC / ARI and head/medium/tail ACC.",
        )

    def after_fit(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        if config.get("report", True) and not self.trainer.interrupted:
            final_report(self.trainer, self.model, self.datamodule)


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``dcl-cluster`` console script (``args`` default to ``sys.argv``)."""
    DCLClusterCLI(
        DebiasedClusterModule,
        LongTailDataModule,
        args=args,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
    )


if __name__ == "__main__":
    main()
