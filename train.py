"""Train an SGP system: `python train.py [experiment=NAME] [key=value ...]` (see conf/train.yaml)."""

import hydra
from omegaconf import DictConfig

from sgp_lightning.train import optimized_metric, train
from sgp_lightning.utils import clean_errors


@hydra.main(version_base="1.3", config_path="conf", config_name="train.yaml")
def main(cfg: DictConfig) -> float | None:
    with clean_errors():
        metrics, _ = train(cfg)
        return optimized_metric(cfg, metrics)


if __name__ == "__main__":
    main()
