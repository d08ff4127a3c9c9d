"""`pullgate chaos`: kill, freeze, slow and overload services under load, and check what should survive it.

    pullgate up --allow-fault-injection            # one terminal
    pullgate chaos --duration 60 --seed 7          # another: report, pullgate-chaos.json, pullgate-chaos.png
    pullgate chaos --start --duration 30           # or start a system of its own in a temporary directory

See docs/chaos.md for the fault types, the invariants and how to read the report.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import random
import sys
import tempfile
from pathlib import Path

from pullgate.tools.chaos.actions import InjectionUnavailable
from pullgate.tools.chaos.invariants import Limits
from pullgate.tools.chaos.load import DEFAULT_MIX, parse_mix
from pullgate.tools.chaos.overload import NoCapacity
from pullgate.tools.chaos.runner import PICTURE_FILE, REPORT_FILE, Settings, chaos
from pullgate.tools.chaos.schedule import DEFAULT_KINDS, KINDS, ScheduleError
from pullgate.tools.chaos.system import SystemUnusable, start
from resilience import DurationError, parse_seconds

MAX_DURATION = 3600.0
MAX_RATE = 500.0

__all__ = ["Settings", "add_arguments", "chaos", "run"]


def _seconds(text: str) -> float:
    """A duration flag: `500ms`, `2s`, `1.5m` or a plain number of seconds (docs/resilience.md#durations)."""
    try:
        return parse_seconds(text)
    except DurationError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise argparse.ArgumentTypeError(f"{text!r}: choose from {', '.join(KINDS)}")
    return kinds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `pullgate chaos`."""
    parser.epilog = ("Schedule example: --schedule '5s kill customers; 15s freeze catalog for 3s; "
                     "25s slow inventory 300ms@50%% for 5s; 35s fail orders UNAVAILABLE@20%% for 4s; "
                     "45s overload gateway 3x for 5s'; with --replicas 2, '5s gray catalog for 6s'. "
                     "See docs/chaos.md.")
    system = parser.add_argument_group("the system")
    system.add_argument("--data-dir", type=Path, help="where `pullgate up` runs (default ./var; with --start, a "
                                                     "new temporary directory)")
    system.add_argument("--start", action="store_true",
                        help="start `pullgate up --any-ports --allow-fault-injection` for this run, stop it after")
    system.add_argument("--replicas", type=int, default=1, help="with --start: processes per owner (default 1)")
    system.add_argument("--config", type=Path, help="with --start: the config file to run the system with")
    load = parser.add_argument_group("load and faults")
    load.add_argument("--duration", type=_seconds, default=60.0, help="seconds of load and faults (default 60)")
    load.add_argument("--rate", type=float, default=20.0, help="requests per second, open loop (default 20)")
    load.add_argument("--deadline", type=_seconds, default=1.5, help="each request's deadline (default 1.5s)")
    load.add_argument("--seed", type=int, help="for the schedule and the load (default: random, printed)")
    load.add_argument("--schedule", default="", metavar="STEPS",
                      help="explicit faults 'AT ACTION TARGET [ARGS] [for DURATION]; ...' instead of random ones")
    load.add_argument("--kinds", type=_kinds, default=DEFAULT_KINDS, metavar="K,K",
                      help=f"fault kinds for a random schedule, of {','.join(KINDS)} (default "
                           f"{','.join(DEFAULT_KINDS)}: overload only when named)")
    load.add_argument("--targets", default="", metavar="NAME,NAME",
                      help="processes a random schedule may hit, e.g. customers,catalog-1 (default: all)")
    load.add_argument("--mix", type=parse_mix, default=dict(DEFAULT_MIX), metavar="KIND=W,...",
                      help=f"request mix weights (default {','.join(f'{k}={v:g}' for k, v in DEFAULT_MIX.items())})")
    judge = parser.add_argument_group("invariants and output")
    judge.add_argument("--deadline-tolerance", type=_seconds, default=Limits.deadline_tolerance,
                       help=f"allowed lateness past a deadline (default {Limits.deadline_tolerance:g}s)")
    judge.add_argument("--heal-bound", type=_seconds, default=Limits.heal_bound,
                       help=f"time to heal after the last fault (default {Limits.heal_bound:g}s: breaker reset "
                            "5s + a probe + slack)")
    judge.add_argument("--goodput-share", type=float, default=Limits.goodput_share, metavar="SHARE",
                       help="goodput an overload must keep in each second after its first, as a share of capacity "
                            f"(default {Limits.goodput_share:g})")
    judge.add_argument("--max-rss", type=float, default=Limits.max_rss_mib, metavar="MIB",
                       help=f"peak resident memory allowed per process (default {Limits.max_rss_mib:g} MiB)")
    judge.add_argument("--out", type=Path, default=Path(), help=f"where {REPORT_FILE} and {PICTURE_FILE} go "
                                                                "(default: the current directory)")


def _settings(args: argparse.Namespace, data_dir: Path) -> Settings:
    if not 0 < args.duration <= MAX_DURATION:
        raise ValueError(f"--duration: must be more than 0 and at most {MAX_DURATION:g}s")
    if not 0 < args.rate <= MAX_RATE:
        raise ValueError(f"--rate: must be more than 0 and at most {MAX_RATE:g} requests per second")
    if args.deadline <= 0:
        raise ValueError("--deadline: must be more than 0")
    if not 0 <= args.goodput_share <= 1:
        raise ValueError("--goodput-share: must be between 0 and 1")
    limits = Limits(deadline_tolerance=args.deadline_tolerance, heal_bound=args.heal_bound,
                    max_rss_mib=args.max_rss, goodput_share=args.goodput_share)
    targets = tuple(t.strip() for t in args.targets.split(",") if t.strip())
    return Settings(data_dir=data_dir, duration=args.duration, rate=args.rate, seed=args.seed,
                    deadline=args.deadline, schedule=args.schedule, kinds=args.kinds, targets=targets,
                    mix=args.mix, limits=limits, out=args.out)


def run(args: argparse.Namespace) -> int:
    """Run `pullgate chaos`; 0 if every invariant held, 1 if one was violated, 2 if the run could not be made."""
    if args.seed is None:
        args.seed = random.randrange(1_000_000)
    with contextlib.ExitStack() as stack:
        try:
            data_dir = args.data_dir or Path("var")
            settings = _settings(args, data_dir)
            if args.start:
                if args.replicas < 1:
                    raise ValueError("--replicas: must be at least 1")
                if args.data_dir is None:
                    data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pullgate-chaos-")))
                    settings = dataclasses.replace(settings, data_dir=data_dir)
                print(f"starting pullgate up in {data_dir} ...", flush=True)
                started = start(data_dir, args.replicas, args.config)
                stack.callback(started.stop)
            elif args.replicas != 1 or args.config is not None:
                raise ValueError("--replicas and --config apply only with --start")
            report = asyncio.run(chaos(settings))
        except (SystemUnusable, InjectionUnavailable, ScheduleError, NoCapacity, ValueError) as error:
            print(f"pullgate chaos: {error}", file=sys.stderr)
            return 2
    print()
    print(report.text())
    print(f"\nwrote {args.out / REPORT_FILE} and {args.out / PICTURE_FILE}")
    return 0 if report.held else 1
