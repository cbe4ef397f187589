"""``python -m httpx_breaker``: the command line (for now, the demo)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _duration(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 2.0 <= value <= 600.0:
        raise argparse.ArgumentTypeError(f"must be between 2 and 600 seconds, got {text}")
    return value


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def _version() -> str:
    """The installed distribution's version (what `pip show httpx-breaker` says)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("httpx-breaker")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m httpx_breaker",
        description="httpx-breaker: a per-host circuit breaker for httpx.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    demo = commands.add_parser(
        "demo",
        help="watch breakers protect a failing upstream (starts its own servers)",
        description=(
            "Start two HTTP servers on 127.0.0.1 ('orders' and 'catalog'), send traffic "
            "to both through AsyncCircuitBreakerTransport, and show each host's breaker "
            "as it works. 'orders' goes healthy -> failing -> recovering, so its breaker "
            "goes CLOSED -> OPEN -> HALF_OPEN (-> OPEN -> HALF_OPEN ...) -> CLOSED; "
            "'catalog' stays healthy (a rare error aside) and keeps serving. The demo "
            "checks the servers' own request logs against the breakers' state changes "
            "and reports how many requests reached a server while its breaker was open: "
            "it should be 0, and the exit status is 1 if it is not. Nothing but "
            "127.0.0.1 is contacted."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    demo.add_argument(
        "--duration",
        type=_duration,
        default=15.0,
        metavar="SECONDS",
        help=(
            "how long the demo runs, 2 to 600; the phases (healthy 25%%, failing 40%%, "
            "recovering 35%%) and the breaker's open period scale with it"
        ),
    )
    demo.add_argument(
        "--failure-rate",
        type=_rate,
        default=0.8,
        metavar="RATE",
        help="share of requests to 'orders' that fail (HTTP 503) in the failing phase, in (0, 1]",
    )
    demo.add_argument(
        "--seed",
        type=int,
        default=None,
        help=(
            "seed of the servers' random failures (a random one is chosen and printed "
            "if omitted); request timing still varies from run to run"
        ),
    )
    demo.add_argument(
        "--plain",
        action="store_true",
        help="print plain lines even on a terminal (the default when output is not a terminal)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from ._demo import run_demo

        return run_demo(
            duration=args.duration,
            failure_rate=args.failure_rate,
            seed=args.seed,
            plain=args.plain,
        )
    raise AssertionError(f"unknown command {args.command!r}")  # argparse refuses others


if __name__ == "__main__":
    sys.exit(main())
