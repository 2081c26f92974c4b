"""``fha cache``: where the token cache lives, what it holds and how big it is; ``fha cache clear`` empties it."""

from __future__ import annotations

import argparse

from fha.data.cache_location import CACHE_ENV, token_cache_dir
from fha.wording import counted

KIB = 1024
SIZE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "cache",
        help="list or clear the token cache",
        description=f"Training tokenises its data once into a cache folder (${CACHE_ENV}/tokens, by default "
        "~/.cache/fha/tokens) shared by all runs. 'list' (the default) shows its entries and size; 'clear' "
        "deletes them (runs rebuild what they need).",
    )
    parser.add_argument(
        "action",
        nargs="?",
        default="list",
        choices=("list", "clear"),
        help="list the entries (default) or delete them all",
    )
    parser.set_defaults(func=run_cache)


def human_size(num_bytes: int) -> str:
    if num_bytes < KIB:
        return f"{num_bytes} B"
    size, unit = float(num_bytes), 0
    while size >= KIB and unit < len(SIZE_UNITS) - 1:
        size /= KIB
        unit += 1
    return f"{size:.1f} {SIZE_UNITS[unit]}"


def run_cache(args: argparse.Namespace) -> int:
    from fha.data.cache import clear_cache, list_cache

    folder = token_cache_dir()
    if args.action == "clear":
        count, size = clear_cache(folder)
        print(f"removed {counted(count, 'file')} ({human_size(size)}) from {folder}")
        return 0
    entries = list_cache(folder)
    print(f"token cache: {folder} (set {CACHE_ENV} to move it)")
    if not entries:
        print("empty")
        return 0
    width = max(len(entry.name) for entry in entries)
    for entry in entries:
        tokens = f"{entry.num_tokens:,} tokens" if entry.num_tokens is not None else "-"
        print(f"  {entry.name:<{width}}  {human_size(entry.num_bytes):>10}  {tokens:>16}  {entry.source}")
    complete = sum(entry.complete for entry in entries)
    total = sum(entry.num_bytes for entry in entries)
    leftovers = len(entries) - complete
    extra = f" and {counted(leftovers, 'leftover file')}" if leftovers else ""
    print(f"{counted(complete, 'entry', 'entries')}{extra}, {human_size(total)} in all; 'fha cache clear' deletes them")
    return 0
