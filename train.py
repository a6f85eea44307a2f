"""Train an SGP system: `python train.py [experiment=NAME] [key=value ...]` (see conf/train.yaml)."""

import hydra
from omegaconf import DictConfig

from sgp_lightning.sweep import is_multirun, run_sweep_job
from sgp_lightning.train import optimized_metric, train
from sgp_lightning.utils import clean_errors


def run(cfg: DictConfig) -> float | None:
    metrics, _ = train(cfg)
    return optimized_metric(cfg, metrics)


@hydra.main(version_base="1.3", config_path="conf", config_name="train.yaml")
def main(cfg: DictConfig) -> float | None:
    if is_multirun():  # a failing job is recorded in its folder and the sweep goes on
        return run_sweep_job(lambda: run(cfg))
    with clean_errors():
        return run(cfg)


if __name__ == "__main__":
    main()
