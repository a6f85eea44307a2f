"""Regenerate one results table: `python reproduce.py NAME output_dir=DIR [key=value ...]`.

NAME is an entry of conf/reproduce/ (e.g. pit, pit_beta_sweep).
"""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from sgp_lightning.reproduce import reproduce
from sgp_lightning.utils import clean_errors


@hydra.main(version_base="1.3", config_path="conf", config_name="reproduce.yaml")
def main(cfg: DictConfig) -> None:
    with clean_errors():
        reproduce(cfg)


if __name__ == "__main__":
    entries = sorted(  # files starting with _ hold settings entries share (e.g. _d4rl.yaml)
        p.stem
        for p in (Path(__file__).parent / "conf" / "reproduce").glob("*.yaml")
        if not p.name.startswith("_")
    )
    if len(sys.argv) < 2 or "=" in sys.argv[1] or sys.argv[1].startswith("-"):
        print(
            f"usage: python reproduce.py NAME output_dir=DIR [key=value ...]; NAME is one of {entries}",
            file=sys.stderr,
        )
        sys.exit(2)
    name = sys.argv.pop(1)
    if name not in entries:
        print(f"error: unknown reproduction {name!r}; choose one of {entries}", file=sys.stderr)
        sys.exit(2)
    sys.argv.insert(1, f"reproduce={name}")
    main()
