"""``noisewatch`` command line: one argparse front for every subcommand.

Handlers are imported lazily (``module:function``), and only the subcommand being run gets its
arguments (the others are listed by name and help), so ``noisewatch run`` imports neither the training
settings nor the setup wizard: start-up to the first window is a target of issue 17.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence

from noisewatch import __version__

Handler = Callable[[argparse.Namespace], int]


def _add_run(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", help="YAML config file (default: built-in defaults)")
    p.add_argument("--input", "-i", metavar="AUDIOFILE", help="replay a recording instead of the microphone")
    p.add_argument("--speed", type=_replay_speed, default=1.0,
                   help="replay pace: 1 real time (default), 4 faster, 0 as fast as possible")
    p.add_argument("--jsonl", metavar="PATH", help="write every sink message as JSON lines ('-': stdout)")
    p.add_argument("--model", help="model bundle, overriding model.path")
    p.set_defaults(handler="noisewatch.daemon.service:main")


def _add_classify(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--model", help="model bundle (default: the shipped model)")
    p.add_argument("--hop", type=_seconds, default=2.0, help="seconds between windows of long recordings")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler="noisewatch.classify:main")


def _add_devices(p: argparse.ArgumentParser) -> None:
    p.set_defaults(handler="noisewatch.daemon.sources:list_devices_main")


def _add_check_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("config")
    p.set_defaults(handler="noisewatch.daemon.service:check_config_main")


def _add_train(p: argparse.ArgumentParser) -> None:
    from noisewatch.train.settings import DEFAULT_QUIET, ModelSettings  # the command line shows the settings' defaults

    defaults = ModelSettings()
    p.add_argument("--urbansound", metavar="DIR", help="UrbanSound8K root (metadata/ + audio/)")
    p.add_argument("--esc50", metavar="DIR", help="ESC-50 root (meta/ + audio/), for the background class")
    p.add_argument("--folder", metavar="DIR", action="append", default=[], help="folder-per-class dataset (repeatable)")
    p.add_argument("--background", metavar="DIR", help="folder of the user's own background recordings")
    p.add_argument("--folds", help="UrbanSound8K folds to use, e.g. 1,2 (default: all present)")
    p.add_argument("--out", default="build/train", help="output folder for the Keras model, cache and report")
    p.add_argument("--epochs", type=int, default=defaults.epochs)
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--hidden", default=",".join(map(str, defaults.hidden)), help="hidden layer sizes, comma-separated")
    p.add_argument("--dropout", type=float, default=defaults.dropout)
    p.add_argument("--stats", default="mean,std", help="statistics over time, comma-separated, from "
                   "mean,std,delta_std,max,min,p10,p90,skew (per MFCC), mel_mean,mel_std (per mel band) and "
                   "modulation,periodicity (of the first 8 MFCC trajectories) and spectral_shape (flatness, "
                   "peak and contrast of 6 mel-band groups), peak (their mean over the loudest --peak-s)")
    p.add_argument("--peak-s", type=_seconds, metavar="S",
                   help="length of the loudest stretch the peak statistic describes, in seconds (default 1)")
    p.add_argument("--short-clip", choices=["tile", "pad"], default="tile", help="how clips under 4 s are fitted")
    p.add_argument("--frames", choices=["centred", "inner"], default="centred",
                   help="a window's STFT frames: centred on its hops over zero padding (librosa's default), or only "
                        "those wholly inside it (each computed once by the daemon's stream)")
    p.add_argument("--top-db", type=_top_db, default=80.0, metavar="DB",
                   help="dynamic range kept below the loudest mel bin, in dB, or 'none' (unclipped: with --frames "
                        "inner the daemon forms each frame's values once)")
    p.add_argument("--top-db-per", choices=["window", "frame"], default="window",
                   help="whose loudest bin --top-db counts from: the window's (librosa's power_to_db) or each "
                        "frame's own (with --frames inner the daemon then forms each frame's values once)")
    p.add_argument("--l2", type=float, default=defaults.l2, help="L2 penalty on the hidden layers' weights")
    p.add_argument("--label-smoothing", type=float, default=defaults.label_smoothing, help="label smoothing of the cross-entropy")
    p.add_argument("--ensemble", type=int, default=defaults.ensemble, metavar="N", help="MLPs (seeds) averaged inside one model")
    p.add_argument("--augment", type=int, default=defaults.augment_copies, metavar="N", help="augmented copies of each training clip")
    p.add_argument("--speed-perturb", metavar="FACTORS", type=_speed_factors,
                   help="playback-rate factors, e.g. 0.84,1.19: one sped-up/slowed copy of each training clip per factor")
    p.add_argument("--min-threshold", type=_threshold_floor, default=defaults.min_threshold, metavar="T",
                   help="lowest per-class threshold picked on clip scores (0-0.95); where soundscapes are "
                        "evaluated (--urbansound, --esc50, scaper), the target classes' thresholds are picked on "
                        "events from 0.3-0.95 instead")
    p.add_argument("--scene-mix", type=int, default=defaults.scene_mix, metavar="N",
                   help="scene-mix windows per clip: the event at a random offset and level in a quiet 4 s bed")
    p.add_argument("--scene-windows", type=int, default=defaults.scene_windows, metavar="N",
                   help="training soundscapes per fold (scaper, 0-24 dB over ambience, with distractors) cut into "
                        "labelled windows; needs --urbansound and --esc50")
    p.add_argument("--scene-window-weight", type=float, default=defaults.scene_window_weight, metavar="W",
                   help="loss weight of a soundscape window relative to an original clip")
    p.add_argument("--scene-mix-weight", type=float, default=defaults.scene_mix_weight, metavar="W",
                   help="loss weight of a scene-mix window relative to an original clip")
    p.add_argument("--quiet", type=int, default=DEFAULT_QUIET, metavar="N", help="synthetic quiet background clips")
    p.add_argument("--no-class-weight", action="store_true", help="do not weight classes by inverse frequency")
    p.add_argument("--background-weight", type=float, default=defaults.background_weight, help="extra loss weight of the background class")
    p.add_argument("--no-baselines", action="store_true", help="skip the RandomForest and KNN baselines")
    p.add_argument("--workers", type=int, default=2, help="processes for feature extraction")
    p.set_defaults(handler="noisewatch.train.pipeline:main")


def _replay_speed(text: str) -> float:
    """A replay pace of 0 or more (-1 was taken, and the file then failed as unreadable, exit 66)."""
    try:
        speed = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not speed >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 (as fast as possible) or more, not {text}")
    return speed


def _speed_factors(text: str) -> tuple[float, ...]:
    """'0.9,1.1' -> (0.9, 1.1); each factor between 0.25 and 4 and not 1 (that would only repeat the clips)."""
    try:
        factors = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}") from None
    bad = [f for f in factors if not 0.25 <= f <= 4.0 or f == 1.0]
    if bad:
        raise argparse.ArgumentTypeError(f"factors must lie in 0.25-4 and differ from 1, not {bad}")
    return factors


def _seconds(text: str) -> float:
    """A length of time: a finite number above 0 (inf would reach the feature code as a frame count)."""
    return _positive(text, "seconds")


def _top_db(text: str) -> float | None:
    """A dynamic range in dB above 0, or 'none'."""
    return None if text.lower() == "none" else _positive(text, "dB", " or 'none'")


def _positive(text: str, unit: str, other: str = "") -> float:
    """A finite number above 0 of ``unit``; ``other`` names what else the option takes."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number{other}: {text!r}") from None
    if not 0.0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number of {unit} above 0{other}, not {text}")
    return value


def _threshold_floor(text: str) -> float:
    from noisewatch.train.metrics import THRESHOLD_MAX  # numpy: only when a floor is given

    value = float(text)
    if not 0.0 <= value <= THRESHOLD_MAX:
        raise argparse.ArgumentTypeError(f"must lie in 0-{THRESHOLD_MAX}, not {value}")
    return value


def _add_evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model bundle")
    p.add_argument("--dataset", required=True, metavar="DIR", help="UrbanSound8K, ESC-50 or folder-per-class root")
    p.add_argument("--folds", help="UrbanSound8K folds, e.g. 1,2")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument("--predictions", metavar="CSV", help="write one row per clip")
    p.set_defaults(handler="noisewatch.train.evaluate:main")


def _add_evaluate_scenes(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, metavar="DIR", help="UrbanSound8K root: foreground events by fold")
    p.add_argument("--ambience", required=True, metavar="DIR", help="ESC-50 root: ambience beds (non-target categories)")
    p.add_argument("--folds", default="1,2", help="UrbanSound8K folds, each scored on its own soundscapes")
    p.add_argument("--model", help="model bundle (default: the config's, else the shipped model)")
    p.add_argument("--config", "-c", help="daemon config whose detector settings are used (default: built-in)")
    p.add_argument("--scenes", type=int, default=20, help="soundscapes per fold with events at SNR 6-24 dB")
    p.add_argument("--sweep-scenes", type=int, default=10, help="soundscapes per fold and fixed SNR (0-24 dB)")
    p.add_argument("--background-scenes", type=int, default=40, help="background-only soundscapes per fold")
    p.add_argument("--seed", type=int, default=13, help="seed of the soundscape set")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--png", metavar="PATH", help="write F1 against SNR and per-class bars")
    p.set_defaults(handler="noisewatch.train.scene_eval:main")


def _add_convert(p: argparse.ArgumentParser) -> None:
    p.add_argument("--train-dir", default="build/train", help="output folder of 'noisewatch train'")
    p.add_argument("--out", default="models", help="folder for the bundle")
    p.add_argument("--name", default="urban11", help="bundle name")
    p.add_argument("--variant", choices=["float32", "int8"], action="append", help="variants to write (default: both)")
    p.add_argument("--version", help="bundle version (default: the training date, YYYY.MM.DD)")
    p.set_defaults(handler="noisewatch.convert:main")


def _add_dashboard(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", help="the daemon's config file (broker, TLS, prefix)")
    p.add_argument("--port", type=int, default=8501, help="port to serve the pages on (default 8501)")
    p.add_argument("--address", help="address to listen on (default 127.0.0.1, this machine only; 0.0.0.0: every "
                   "interface, without a login)")
    p.set_defaults(handler="noisewatch.dashboard.launch:main")


def _add_setup(p: argparse.ArgumentParser) -> None:
    from noisewatch.setup_wizard import add_arguments

    add_arguments(p)
    p.set_defaults(handler="noisewatch.setup_wizard:main")


COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "run": ("run the listening daemon (microphone, or a file with --input)", _add_run),
    "classify": ("classify recordings offline, window by window", _add_classify),
    "devices": ("list audio input devices", _add_devices),
    "check-config": ("validate a config file (and its model bundle) without starting", _add_check_config),
    "setup": ("first configuration: input device, device id, MQTT broker and password", _add_setup),
    "train": ("build the dataset, train the Keras MLP and write a fold-wise report", _add_train),
    "evaluate": ("evaluate a converted bundle through the runtime path", _add_evaluate),
    "evaluate-scenes": ("score the daemon's events on scaper soundscapes with sed_eval", _add_evaluate_scenes),
    "convert": ("convert a trained Keras model into a TFLite bundle", _add_convert),
    "dashboard": ("start the Streamlit dashboard (needs the 'dashboard' extra)", _add_dashboard),
}
"""Subcommand -> (help line, what adds its arguments), in the order ``--help`` lists them."""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Every subcommand by name; the arguments of ``command`` only (None: of all, e.g. for --help)."""
    parser = argparse.ArgumentParser(prog="noisewatch", description="Urban noise event detection, published over MQTT.")
    parser.add_argument("--version", action="version", version=f"noisewatch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (text, add) in COMMANDS.items():
        p = sub.add_parser(name, help=text)
        if command in (None, name):
            add(p)
    return parser


def resolve(handler: str) -> Handler:
    module, _, function = handler.partition(":")
    return getattr(importlib.import_module(module), function)


SINGLE_THREAD_COMMANDS = ("run", "check-config")
"""Commands whose matrices are tiny (one window per hop): BLAS worker threads would only fight the audio
thread and other processes for cores. Measured on 2 busy cores: features per hop 16 ms median with OpenBLAS
threads, 1.4 ms with one. Set before numpy loads; an explicit setting in the environment still wins."""
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
NO_PYDANTIC_PLUGINS = ("PYDANTIC_DISABLE_PLUGINS", "__all__")
"""The daemon's config models use no pydantic plugins; without this, building the first model scans the
entry points of every installed distribution for them (10-35 ms of start-up here)."""


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((arg for arg in argv if not arg.startswith("-")), None)  # no global option takes a value
    args = build_parser(command).parse_args(argv)
    if args.command in SINGLE_THREAD_COMMANDS:
        for variable in BLAS_THREAD_VARIABLES:
            os.environ.setdefault(variable, "1")
        os.environ.setdefault(*NO_PYDANTIC_PLUGINS)
    if args.command == "run":  # before its imports (0.3 s): a SIGHUP meanwhile ended it (129), Ctrl-C gave a traceback
        from noisewatch.daemon.signals import installed

        installed()
    return resolve(args.handler)(args)


if __name__ == "__main__":
    sys.exit(main())
