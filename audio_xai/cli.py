"""Command line: ``python main.py fit|validate|test [--explain METHODS] ...``, ``python main.py report ...`` and
``python main.py dashboard ...``.

``fit`` and ``test`` are a LightningCLI (configs in ``configs/``, every option overridable);
``report`` turns explained runs into tables and an HTML page, ``dashboard`` builds the W&B report that compares
the logged runs; neither needs a Trainer.
"""
from __future__ import annotations

import json
import logging
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Optional

from audio_xai.errors import UsageError, UsageValueError

HERE = Path(__file__).resolve().parent.parent  # the checkout, or site-packages: configs/ lies there
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


# -- where the model's and data's options come from -----------------------------------------------------------
CLASS_SECTIONS = ("model", "data")


class Given:
    """One option of a class section as a config or the command line set it: its value and the class it was
    written for: a config section without a class_path is written for whatever class was chosen before it."""

    def __init__(self, source: str, written_for: Optional[str], kind: str, value=None):
        # kind: "class" (beside its class_path in a config), "flat" (a config section without one), "argument"
        self.source, self.written_for, self.kind, self.value = source, written_for, kind, value


class SectionSources:
    """What the configs and the command line, read in argparse's order, say about one class section: each
    option's latest ``Given``, and the latest class named other than by the project's default config."""

    def __init__(self):
        self.current: Optional[str] = None
        self.options: dict[str, Given] = {}
        self.named_class: Optional[tuple[str, str]] = None  # (class path, the option or file that named it)

    def choose(self, class_path: str, source: str, default: bool) -> None:
        self.current = class_path
        if not default:
            self.named_class = (class_path, source)

    def config_section(self, value, source: str, default: bool) -> None:
        if isinstance(value, str):
            self.choose(value, source, default)
        elif isinstance(value, dict):
            if value.get("class_path"):
                self.choose(value["class_path"], source, default)
            kind = "class" if value.get("class_path") else "flat"
            for key, item in {**value, **(value.get("init_args") or {})}.items():
                if key not in ("class_path", "init_args", "dict_kwargs", "__path__"):
                    self.options[key] = Given(source, self.current, kind, item)


def _yaml(text_or_path: str):
    import yaml
    try:
        path = Path(text_or_path)
        text = path.read_text() if path.is_file() else text_or_path
    except (OSError, ValueError):
        text = text_or_path
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return None


def option_sources(argv: list[str], default_files: list[str]) -> dict[str, SectionSources]:
    """``SectionSources`` of the model and data sections of a subcommand's ``argv`` (after the subcommand),
    read as jsonargparse reads them: the default config files first, then the arguments left to right."""
    sections = {name: SectionSources() for name in CLASS_SECTIONS}

    def config(value, source: str, default: bool) -> None:
        loaded = _yaml(value)
        if isinstance(loaded, dict):
            for name, section in sections.items():
                if name in loaded:
                    section.config_section(loaded[name], source, default)

    for path in default_files:
        config(path, Path(path).name, default=True)
    i = 0
    while i < len(argv):
        flag, eq, value = argv[i].partition("=")
        i += 1
        if not eq and i < len(argv) and not argv[i].startswith("--"):  # a flag alone (--print_config) takes none
            value, i = argv[i], i + 1
        if flag in ("--config", "-c"):
            config(value, value, default=False)
            continue
        name, _, key = flag.lstrip("-").partition(".")
        if not flag.startswith("--") or name not in sections:
            continue
        section = sections[name]
        if key in ("", "class_path"):
            loaded = _yaml(value) if key == "" else value
            section.config_section(loaded if isinstance(loaded, (dict, str)) else value, f"--{name}", False)
        elif key != "help":
            option = key.removeprefix("init_args.").partition(".")[0]
            section.options[option] = Given(f"--{name}.{key}", section.current, "argument")
    return sections


def _same_class(a: Optional[str], b: Optional[str]) -> bool:
    """Two class paths name the same class (``lightning_modules.AudioClassifier`` and
    ``lightning_modules.model.AudioClassifier``; a bare class name as jsonargparse accepts it)."""
    if not a or not b:
        return a == b
    if a == b or "." not in a or "." not in b:
        return a.rpartition(".")[2] == b.rpartition(".")[2]
    objects = []
    for path in (a, b):
        module, _, name = path.rpartition(".")
        imported = sys.modules.get(module)  # a class is compared only once its module is loaded: no import here
        objects.append(getattr(imported, name, path) if imported else path)
    return objects[0] is objects[1] or objects[0] == objects[1]


def own_defaults(sources: dict[str, SectionSources]) -> tuple[list[str], list[str]]:
    """A class chosen by a later config or option gets its own defaults, not the values a config wrote beside
    another class's class_path (jsonargparse carries over every value the new class accepts): returns the
    arguments that restore them, to go after the command's own, and one line per section that says which
    values of a config section without a class_path apply to a class they were not written for."""
    import inspect

    from jsonargparse._util import import_object
    extra, notes = [], []
    for name, section in sources.items():
        chosen = section.current
        try:
            params = inspect.signature(import_object(chosen).__init__).parameters if chosen else {}
        except Exception:  # a class jsonargparse resolves (or rejects) itself: its own message follows
            continue
        applied: dict[tuple, list[str]] = {}  # (config file, the class it wrote for) -> what applies anyway
        for key, given in section.options.items():
            if given.kind == "argument" or key not in params or _same_class(given.written_for, chosen):
                continue
            default = params[key].default
            if given.kind == "class" and default is not inspect.Parameter.empty:
                try:  # a string as it is: jsonargparse would keep JSON's quotes in a str option
                    spelt = default if isinstance(default, str) else json.dumps(default)
                    extra.append(f"--{name}.init_args.{key}={spelt}")
                except TypeError:  # a default no option can spell: left as jsonargparse has it
                    pass
            elif default is inspect.Parameter.empty or given.value != default:
                own = "" if default is inspect.Parameter.empty else f" (its default {default!r})"
                applied.setdefault((given.source, given.written_for), []).append(f"{key}={given.value!r}{own}")
        for (source, written_for), values in applied.items():
            notes.append(f"note: {source} sets {name} options for {written_for} that apply to {chosen}: "
                         f"{', '.join(values)}; set --{name}.init_args.NAME to change one")
    return extra, notes


RUN: dict = {}  # the command, its run folder and explain options, once parsed: for the resume hint


def no_tips(record: logging.LogRecord) -> bool:
    """Lightning's advertisements for its cloud services (a tip on every command) are not this tool's output."""
    return not str(record.msg).startswith("💡 Tip")


def short_error(message: str) -> str:
    """jsonargparse's message in one line: of a union's alternatives, only the errors of the one given (a
    class_path that does not import, say), not the None it also tried."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if len(lines) > 1 and "Does not validate against any of the Union subtypes" in lines[1]:
        skip = ("Does not validate", "Subtypes:", "Errors:", "Given value", "- Expected a <class 'NoneType'>")
        lines = [lines[0]] + [line.removeprefix("- ") for line in lines[1:] if not line.startswith(skip)]
    text = " ".join(lines)
    # a Literal option's choices as the project's own checks say them: "must be one of a, b, got 'x'"
    text = re.sub(r"Expected a typing\.Literal\[(.*)\]\. Got value:\s*(.*)$",
                  lambda m: f"must be one of {m[1].replace(chr(39), '')}, got {m[2]!r}", text)
    return re.sub(r'^Parser key "([^"]+)":', r"--\1:", text)


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
        print(f"error: {one_line(usage)}\n(set AUDIOXAI_DEBUG=1 to see where it was raised)", file=sys.stderr)
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


def one_line(err: UsageError) -> str:
    """The user's mistake as it was raised: a DataLoader worker's error comes back as the same type around the
    worker's whole traceback, whose last line is the original ``module.Type: message``."""
    text = str(err)
    if text.startswith("Caught ") and "Original Traceback" in text:
        last = text.rstrip().splitlines()[-1]
        prefix = f"{type(err).__module__}.{type(err).__qualname__}: "
        return last.removeprefix(prefix)
    return text


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
    argv = find_configs(argv)
    sources = {}
    if argv and argv[0] in ("fit", "validate", "test", "predict"):
        sources = option_sources(argv[1:], [str(DEFAULT_CONFIG)])
        extra, notes = own_defaults(sources)
        argv += extra
        if os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0":
            print(*notes, sep="\n", file=sys.stderr, end="\n" if notes else "")
    if args is None:  # LightningCLI, and the launcher of a distributed run's other ranks, read sys.argv
        sys.argv[1:] = argv
    else:
        args = argv

    from callbacks.wandb_log import choose_wandb_mode, configure_runs, print_sync_hint, quiet
    choose_wandb_mode()

    import lightning as L
    from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

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
            self.parser.save(self.config, str(folder / self.config_filename), skip_unset=False,
                             overwrite=self.overwrite, multifile=self.multifile)

    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(no_tips)

    class Parser(LightningArgumentParser):
        """jsonargparse's parser, whose errors are one line and a hint instead of the whole usage (90 lines)."""

        def print_usage(self, file=None) -> None:
            self._print_message(f"usage: {self.prog.replace(' [options]', '')} [options]\n", file)

        def error(self, message: str, ex: Optional[Exception] = None):
            super().error(short_error(message) if self.exit_on_error else message, ex)

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
            sub = self.config.get(self.config.get("subcommand") or "", {})
            # before Lightning reads the checkpoint's hyperparameters, so a bad file is named in one line
            ckpt = sub.get("ckpt_path")
            if ckpt and not (ckpt in ("best", "last", "hpc") or ckpt.startswith("registry")):
                named = sources["model"].named_class if sources else None
                self.ckpt_hparams = check_lightning_checkpoint(ckpt, named=named, same_class=_same_class)

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
            configure_runs(sub, self.subcommand, base)

        def instantiate_classes(self):
            super().instantiate_classes()
            quiet(self.trainer.loggers)

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
              parser_class=Parser,
              args=args, seed_everything_default=0,
              parser_kwargs={sub: {"default_config_files": [str(DEFAULT_CONFIG)]}
                             for sub in ("fit", "validate", "test", "predict")},
              save_config_callback=RunConfig, save_config_kwargs={"overwrite": True, "save_to_log_dir": False})
    _wait_for_other_ranks(cli.trainer)


if __name__ == "__main__":
    main()
