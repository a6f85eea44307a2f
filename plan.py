"""Plan with a trained system: `python plan.py ckpt_path=RUN/checkpoints/last.ckpt output_dir=OUT`."""

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from sgp_lightning.plan import FROM_CHECKPOINT, compose_plan_config, plan
from sgp_lightning.utils import clean_errors


@hydra.main(version_base="1.3", config_path="conf", config_name="plan.yaml")
def main(cfg: DictConfig) -> None:
    with clean_errors():
        if cfg.planner_set == FROM_CHECKPOINT:  # plan with the experiment's planner settings
            cfg = compose_plan_config(list(HydraConfig.get().overrides.task))
        plan(cfg)


if __name__ == "__main__":
    main()
