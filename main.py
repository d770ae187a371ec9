"""Command line: ``python main.py fit|validate|test [--explain METHODS] ...``, ``python main.py report ...`` and
``python main.py dashboard ...``.

``fit`` and ``test`` are a LightningCLI (configs in ``configs/``, every option overridable);
``report`` turns explained runs into tables and an HTML page, ``dashboard`` builds the W&B report that compares
the logged runs; neither needs a Trainer.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Optional

from errors import UsageError, UsageValueError

HERE = Path(__file__).resolve().parent
DEFAULT_CONFIG = HERE / "configs" / "default.yaml"


def find_configs(argv: list[str]) -> list[str]:
    """``argv`` with each ``--config``/``-c`` path that is missing from the current folder but present in the
    project's folder (``configs/quickstart.yaml``) made to point there, so that the installed ``audio-xai``
    command finds the project's configs wherever it runs."""
    def located(path: str) -> str:
        try:
            return str(HERE / path) if not Path(path).exists() and (HERE / path).is_file() else path
        except OSError:  # not a path: a config given inline as YAML, longer than a file name may be
            return path

    argv = list(argv)
    for i, arg in enumerate(argv):
        flag, eq, value = arg.partition("=")
        if eq and flag in ("--config", "-c"):
            argv[i] = f"{flag}={located(value)}"
        elif arg in ("--config", "-c") and i + 1 < len(argv):
            argv[i + 1] = located(argv[i + 1])
    return argv


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


RUN: dict = {}  # the command, its run folder and explain options, once parsed: for the resume hint


class Stopped(KeyboardInterrupt):
    """SIGINT or SIGTERM: raised where the run is, so that Lightning shuts the trainer down as on Ctrl+C
    (on SIGTERM alone it would stop after the batch and exit 0, as if done)."""


def main(args: Optional[list[str]] = None) -> None:
    """Run the command; a mistake in the input (a ``UsageError``) ends with its message, not a traceback
    (set AUDIOXAI_DEBUG=1 to see the traceback); a stopped run exits 128 + the signal's number and says
    how to resume it."""
    stopped: list[int] = []

    def stop(signum, frame):
        if not stopped:  # further signals wait for the shutdown of the first
            stopped.append(signum)
            raise Stopped(signum)

    RUN.clear()
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)} if in_main_thread else {}
    try:
        _main(args)
    except BaseException as err:
        if stopped:
            if _global_rank() == 0:
                print(f"stopped by {signal.Signals(stopped[0]).name}. {_resume_hint()}", file=sys.stderr)
            sys.exit(128 + stopped[0])
        usage = _usage_error(err)
        if usage is None or os.environ.get("AUDIOXAI_DEBUG"):
            raise
        print(f"error: {usage}\n(set AUDIOXAI_DEBUG=1 to see where it was raised)", file=sys.stderr)
        sys.exit(2)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _usage_error(err: BaseException) -> Optional[UsageError]:
    """``err`` if it is a ``UsageError``, else the one it was raised from: jsonargparse raises its own error
    from the one a class given by ``class_path`` raised in its ``__init__``."""
    while err is not None and not isinstance(err, UsageError):
        err = err.__cause__
    return err


def _global_rank() -> int:
    rank_zero = sys.modules.get("lightning.fabric.utilities.rank_zero")  # set by the trainer once it runs
    return getattr(rank_zero.rank_zero_only, "rank", 0) if rank_zero else 0


def _resume_hint() -> str:
    if RUN.get("command") == "fit":
        last = Path(RUN["folder"]) / "checkpoints" / "last.ckpt"
        if last.is_file():
            return f"To resume it, run the same command with --ckpt_path {last}"
        return "No checkpoint was saved yet (one is saved after every epoch); run the same command to start again."
    if RUN.get("explain") and RUN.get("cache"):
        return ("No results were written. To resume it, run the same command again: "
                "the attribution cache keeps the maps computed so far.")
    if RUN.get("explain"):
        return "No results were written; run the same command again (with --explainer.cache false it starts over)."
    return "Run the same command again."


def _wait_for_other_ranks(trainer) -> None:
    """Lightning's launcher starts ranks 1.. as child processes of this one but never waits for them:
    wait, so that a rank that fails after the last collective fails the run too."""
    codes = {rank: proc.wait() for rank, proc in enumerate(getattr(trainer.strategy.launcher, "procs", []), 1)}
    failed = ", ".join(f"local rank {rank} with exit code {code}" for rank, code in codes.items() if code != 0)
    if failed:
        print(f"error: {failed} (see that process's messages above)", file=sys.stderr)
        sys.exit(1)


def _main(args: Optional[list[str]] = None) -> None:
    argv = sys.argv[1:] if args is None else args
    if argv and argv[0] == "report":
        from report.cli import main as report_main
        return report_main(argv[1:])
    if argv and argv[0] == "dashboard":
        from report.dashboard import main as dashboard_main
        return dashboard_main(argv[1:])
    if args is None:  # LightningCLI, and the launcher of a distributed run's other ranks, read sys.argv
        sys.argv[1:] = find_configs(sys.argv[1:])
    else:
        args = find_configs(args)

    from callbacks.wandb_log import choose_wandb_mode, configure_runs, print_sync_hint
    choose_wandb_mode()

    import lightning as L
    from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

    from callbacks import BestCheckpoint, ExplainCallback
    from explain.base import describe_methods, known_methods, method_groups
    from lightning_modules.checkpoint import check_lightning_checkpoint

    class RunConfig(SaveConfigCallback):
        """The resolved config, saved in the run's own folder (``trainer.default_root_dir``, ``fit-<id>`` or
        ``test-<id>``) beside its checkpoints and explanations. Lightning's place, the logger's folder, is
        ``runs/`` under W&B: shared by every run, each overwriting the last one's config."""

        def save_config(self, trainer, pl_module, stage) -> None:
            folder = Path(trainer.default_root_dir)
            folder.mkdir(parents=True, exist_ok=True)
            self.parser.save(self.config, str(folder / self.config_filename), skip_none=False,
                             overwrite=self.overwrite, multifile=self.multifile)

    class CLI(LightningCLI):
        def add_arguments_to_parser(self, parser):
            parser.add_argument("--explain", type=Optional[str], default=None,
                                help="test only: explanation methods to run, a comma list or 'all'. Methods and "
                                     "their options (set with --explainer.options '{\"lime\": {\"num_samples\": "
                                     "500}}'): " + describe_methods())
            parser.add_class_arguments(ExplainCallback, "explainer", skip={"methods"},
                                       help="options of the explanation methods and outputs (used by --explain)")
            # Lightning instantiates this group and appends it to the trainer's callbacks
            parser.add_lightning_class_args(BestCheckpoint, "checkpoint")

        def parse_arguments(self, parser, args):
            super().parse_arguments(parser, args)
            # before Lightning reads the checkpoint's hyperparameters, so a bad file is named in one line
            sub = self.config.get(self.config.get("subcommand") or "", {})
            ckpt = sub.get("ckpt_path")
            if ckpt and not (ckpt in ("best", "last", "hpc") or ckpt.startswith("registry")):
                model_class = sub.get("model", {}).get("class_path")
                self.ckpt_hparams = check_lightning_checkpoint(ckpt, model_class=model_class)

        def _parse_ckpt_path(self):
            # checkpoints written before the model was chosen by class_path hold its arguments without the
            # class: they are the configured model's (AudioClassifier's unless a class is named)
            sub = self.config.get(self.config.get("subcommand") or "", {})
            hparams = {k: v for k, v in getattr(self, "ckpt_hparams", {}).items() if k != "_instantiator"}
            if hparams:  # read by check_lightning_checkpoint: the file is not loaded again here
                model = sub.get("model")
                named = model.get("class_path") if hasattr(model, "get") else None  # default.yaml names one
                if "_class_path" not in hparams and named:
                    self.config = self.parser.parse_object(
                        {self.config.subcommand: {"model": {"class_path": named, "init_args": hparams}}}, self.config)
                    return
            super()._parse_ckpt_path()

        def before_instantiate_classes(self):
            sub = self.config[self.subcommand]
            if sub.get("explain") is not None and not sub.explain.replace(",", "").strip():
                raise UsageValueError(f"--explain is empty: name the methods to explain, a comma list of "
                                      f"{', '.join(known_methods())} or a group ({', '.join(method_groups())}); "
                                      "leave --explain out for a plain test")
            base = Path(sub.trainer.default_root_dir or "runs")
            sub.trainer.default_root_dir = str(base / f"{self.subcommand}-{run_id()}")
            RUN.update(command=self.subcommand, folder=sub.trainer.default_root_dir, explain=sub.explain,
                       cache=sub.explainer.cache)
            configure_runs(sub, self.subcommand)

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

    # any LightningModule and LightningDataModule, by --model.class_path and --data.class_path (LightningCLI's
    # subclass mode); configs/default.yaml names AudioClassifier and ESC50DataModule, and a config or option
    # without a class_path sets their arguments
    cli = CLI(L.LightningModule, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
              args=args, seed_everything_default=0,
              parser_kwargs={sub: {"default_config_files": [str(DEFAULT_CONFIG)]}
                             for sub in ("fit", "validate", "test", "predict")},
              save_config_callback=RunConfig, save_config_kwargs={"overwrite": True, "save_to_log_dir": False})
    _wait_for_other_ranks(cli.trainer)


if __name__ == "__main__":
    main()
