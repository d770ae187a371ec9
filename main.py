"""Command line: ``python main.py fit|validate|test [--explain METHODS] ...`` and ``python main.py report ...``.

``fit`` and ``test`` are a LightningCLI (configs in ``configs/``, every option overridable);
``report`` turns explained runs into tables and an HTML page and needs no Trainer.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
DEFAULT_CONFIG = HERE / "configs" / "default.yaml"


def run_id() -> str:
    """One id per run, shared by every process of a distributed run (Lightning's launcher passes
    the environment on; SLURM and torchrun give their own job ids)."""
    for var in ("AUDIOXAI_RUN_ID", "SLURM_JOB_ID", "TORCHELASTIC_RUN_ID"):
        value = os.environ.get(var)
        if value and value != "none":
            break
    else:  # the suffix keeps two runs started in the same second apart
        value = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid() % 10000:04d}"
    os.environ["AUDIOXAI_RUN_ID"] = value
    return value


def main(args: Optional[list[str]] = None) -> None:
    """Run the command; a mistake in the input ends with its message, not a traceback
    (set AUDIOXAI_DEBUG=1 to see the traceback)."""
    try:
        _main(args)
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as err:
        if os.environ.get("AUDIOXAI_DEBUG") or type(err).__module__.split(".")[0] not in PROJECT_MODULES + ("builtins",):
            raise
        print(f"error: {err}\n(set AUDIOXAI_DEBUG=1 to see where it was raised)", file=sys.stderr)
        sys.exit(2)


PROJECT_MODULES = ("datamodules", "lightning_modules", "explain", "callbacks", "report", "main", "__main__")


def _main(args: Optional[list[str]] = None) -> None:
    argv = sys.argv[1:] if args is None else args
    if argv and argv[0] == "report":
        from report.cli import main as report_main
        return report_main(argv[1:])

    from callbacks.wandb_mode import choose_wandb_mode, print_sync_hint
    choose_wandb_mode()

    from lightning.pytorch.cli import LightningCLI

    from callbacks import ExplainCallback
    from datamodules import ESC50DataModule
    from lightning_modules import AudioClassifier

    class CLI(LightningCLI):
        def add_arguments_to_parser(self, parser):
            parser.add_argument("--explain", type=Optional[str], default=None,
                                help="test only: explanation methods to run, a comma list or 'all'")
            parser.add_class_arguments(ExplainCallback, "explainer", skip={"methods"},
                                       help="options of the explanation methods and outputs (used by --explain)")

        def before_instantiate_classes(self):
            sub = self.config[self.subcommand]
            base = Path(sub.trainer.default_root_dir or "runs")
            sub.trainer.default_root_dir = str(base / f"{self.subcommand}-{run_id()}")

        def after_fit(self):
            print_sync_hint(self.trainer.loggers)

        def after_test(self):
            print_sync_hint(self.trainer.loggers)

        def before_test(self):
            methods = self.config.test.explain
            if methods:
                explainer = self.config_init.test.explainer
                explainer.set_methods(methods)
                self.trainer.callbacks.append(explainer)
                explainer.apply_to_trainer(self.trainer)

    CLI(AudioClassifier, ESC50DataModule, args=args, seed_everything_default=0,
        parser_kwargs={sub: {"default_config_files": [str(DEFAULT_CONFIG)]}
                       for sub in ("fit", "validate", "test", "predict")},
        save_config_kwargs={"overwrite": True})


if __name__ == "__main__":
    main()
