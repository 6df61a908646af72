"""``cpixelcnn cache list | verify | clear``: what the data cache holds, whether it is whole, and removing it."""

from __future__ import annotations

import json
import os
import re
import sys
import time

NAME, HELP = "cache", "list, verify or clear the decoded-image cache (cpixelcnn.data.cache)"


def add_arguments(p) -> None:
    from cpixelcnn.data.cache import ENV_LOCATION

    p.add_argument(
        "action", choices=("list", "verify", "clear"), help="list: entries, sizes, last use; verify: every checksum; clear: remove entries"
    )
    p.add_argument("entries", nargs="*", metavar="ENTRY", help="entries to verify or clear, by the start of their digest (default: all)")
    p.add_argument("--data-cache", metavar="DIR", help=f"the cache folder (default: ${ENV_LOCATION}, else $XDG_CACHE_HOME/cpixelcnn/data)")
    p.add_argument("--older-than", metavar="AGE", help="clear: only entries last used longer ago than AGE (e.g. 12h, 30d)")
    p.add_argument("--json", action="store_true", help="list and verify: one JSON object")


def run(args) -> int:
    from cpixelcnn.data import cache
    from cpixelcnn.data import cache_files as files

    setting = cache.CacheSetting(args.data_cache)
    folder = setting.folder()
    if folder is None:
        raise ValueError(f"the data cache is off (${cache.ENV_LOCATION}={os.environ.get(cache.ENV_LOCATION)}): give --data-cache DIR")
    if args.older_than and args.action != "clear":
        raise ValueError("--older-than goes with clear only")
    if not folder.is_dir():
        print(f"{folder} ({setting.chosen_by()}): no data cache there yet")
        return 0
    chosen = _chosen(files.entries(folder), args.entries)
    if args.action == "list":
        return _list(folder, setting.chosen_by(), chosen, args.json)
    if args.action == "verify":
        return _verify(chosen, args.json)
    return _clear(folder, chosen, _age(args.older_than) if args.older_than else None)


def _chosen(found, prefixes):
    if not prefixes:
        return found
    chosen = []
    for prefix in prefixes:
        digest = prefix.removeprefix("cpixelcnn-").split(".")[0]
        matches = [e for e in found if e.digest.startswith(digest)]
        if not matches or not re.fullmatch(r"[0-9a-f]+", digest):
            raise ValueError(f"no cache entry starts with {prefix!r} (cpixelcnn cache list shows them)")
        chosen += [e for e in matches if e not in chosen]
    return chosen


def _age(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhdw])", text.strip())
    if match is None:
        raise ValueError(f"--older-than {text}: say an age such as 90m, 12h, 30d or 2w")
    return float(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[match.group(2)]


def _row(entry) -> dict:
    marker = entry.load_marker() or {}
    return dict(
        entry=entry.digest,
        bytes=entry.size(),
        shape=marker.get("shape"),
        what=marker.get("what", "?"),
        created=marker.get("created"),
        last_used=time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.last_used())),
        in_use=entry.in_use(),
    )


def _list(folder, chosen_by: str, chosen, as_json: bool) -> int:
    from cpixelcnn.data import cache_files as files

    rows = [_row(e) for e in chosen]
    leftovers = files.leftovers(folder)
    total = sum(r["bytes"] for r in rows)
    limit = files.size_limit()
    if as_json:
        print(
            json.dumps(
                dict(
                    folder=str(folder),
                    chosen_by=chosen_by,
                    entries=rows,
                    total_bytes=total,
                    limit_bytes=limit,
                    leftovers=[str(p) for p in leftovers],
                )
            )
        )
        return 0
    bound = f", bound {files.describe_size(limit)} (${files.ENV_LIMIT})" if limit else ""
    print(f"{folder} ({chosen_by}): {len(rows)} entr{'y' if len(rows) == 1 else 'ies'}, {files.describe_size(total)}{bound}")
    for r in rows:
        shape = "x".join(str(n) for n in r["shape"]) if r["shape"] else "?"
        use = ", in use" if r["in_use"] else ""
        print(f"  {r['entry'][:12]}  {files.describe_size(r['bytes']):>9}  last used {r['last_used']}{use}  {shape}  {r['what']}")
    if leftovers:
        print(
            f"  {len(leftovers)} leftover partial file(s) of killed builds ({files.describe_size(sum(p.stat().st_size for p in leftovers))}): cpixelcnn cache clear removes them"
        )
    return 0


def _verify(chosen, as_json: bool) -> int:
    results = {e.digest: e.verify() for e in chosen}
    bad = {digest: why for digest, why in results.items() if why}
    if as_json:
        print(json.dumps(dict(checked=len(results), corrupt=bad)))
    else:
        for digest, why in results.items():
            print(f"{digest[:12]}  {'ok' if why is None else 'CORRUPT: ' + why}")
        print(f"{len(results) - len(bad)} of {len(results)} entries whole")
    for digest, why in bad.items():
        print(f"cpixelcnn: error: cache entry {digest[:12]} is corrupt: {why} (cpixelcnn cache clear {digest[:12]} removes it)", file=sys.stderr)
    return 1 if bad else 0


def _clear(folder, chosen, older_than: float | None) -> int:
    from cpixelcnn.data import cache_files as files

    team = files.team_group()
    removed = kept = freed = 0
    for entry in chosen:
        if older_than is not None and time.time() - entry.last_used() < older_than:
            continue
        reason = files.distrust(entry.marker.stat(), team)
        if reason or entry.in_use():
            kept += 1
            print(f"kept {entry.digest[:12]}: {reason or 'a process has it mapped'}")
            continue
        freed += entry.size()
        entry.remove()
        removed += 1
    leftovers = files.remove_leftovers(folder)
    print(
        f"removed {removed} entr{'y' if removed == 1 else 'ies'} ({files.describe_size(freed)}) and {leftovers} leftover partial file(s) from {folder}; kept {kept}"
    )
    return 0
