"""``shardlease fencing install|uninstall``: make the API server refuse a deposed holder's writes.

``install`` creates (or brings up to date) one ValidatingAdmissionPolicy, a guard policy and one
binding per shard for a group and a resource (docs/fencing.md); ``--dry-run -o yaml`` prints them
instead, for a GitOps repository. ``uninstall`` deletes what ``install`` created.

Exit codes: 0 done, 1 the cluster refused or cannot enforce it (e.g. the dev-server), 2 a bad setting.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from shardlease.commands.cluster import ConnectFailed, add_cluster_flags, api_failure, connect, namespace_of

__all__ = ["register", "run"]

#: Beyond this many objects created, updated or deleted, ``install`` prints their count.
LIST_AT_MOST = 10

RESOURCE_HELP = ("the objects to fence, [GROUP/]VERSION/RESOURCE with the plural name: v1/configmaps, "
                 "apps/v1/deployments, example.com/v1/widgets")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "fencing",
        help="have the API server refuse writes from a deposed shard holder",
        description="Install ValidatingAdmissionPolicies (Kubernetes 1.30+) that refuse a write stamped with a "
                    "shard's fence (Shard.stamp) once that shard's Lease has moved past it. See docs/fencing.md.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    install = actions.add_parser("install", help="create or update the policies and one binding per shard",
                                 description="Create or update the fencing policies of a group and resource. Run "
                                             "it with --shards <new count> before changing the group's shard "
                                             "count.")
    uninstall = actions.add_parser("uninstall", help="delete the policies and bindings install created")
    for sub in (install, uninstall):
        add_cluster_flags(sub)
        sub.add_argument("--resource", required=True, metavar="[GROUP/]VERSION/RESOURCE", help=RESOURCE_HELP)
        sub.add_argument("--objects-namespace", metavar="NS",
                         help="fence only the objects of this namespace (default: every namespace)")
        sub.set_defaults(func=run)
    install.add_argument("--shards", type=int, metavar="N",
                         help="bind shards 0..N-1 (default: the group's count, or its span during a shrink, read "
                              "from its group Lease)")
    install.add_argument("--dry-run", action="store_true", help="print the manifests instead of installing them")
    install.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml",
                         help="with --dry-run: the format printed (default yaml)")
    parser.set_defaults(func=lambda args: (parser.print_help(sys.stderr), 2)[1])


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from shardlease.client.fencing import FencingUnsupported, group_span, install, uninstall
    from shardlease.core.fencing import manifests, target
    from shardlease.errors import ConfigError, InvalidArgument

    out = out or sys.stdout
    try:
        namespace_of(args)
        t = target(args.group, args.namespace, args.resource, args.objects_namespace)
        if args.action == "install" and args.shards is not None:
            manifests(t, args.shards)  # checks --shards before connecting
    except (ConfigError, InvalidArgument) as exc:
        return _fail(str(exc), 2)

    if args.action == "install" and args.dry_run and args.shards is not None:
        _print(manifests(t, args.shards), args.output, out)
        return 0
    try:
        api = connect(args, "shardlease-fencing")
    except ConnectFailed as exc:
        return _fail(str(exc), 1)
    try:
        if args.action == "uninstall":
            change = uninstall(api, t)
        else:
            shards = args.shards if args.shards is not None else group_span(api, t.group, t.namespace)
            if args.dry_run:
                _print(manifests(t, shards), args.output, out)
                return 0
            change = install(api, t, shards)
    except InvalidArgument as exc:
        return _fail(str(exc), 2)
    except FencingUnsupported as exc:
        return _fail(str(exc), 1)
    except Exception as exc:
        return _fail(api_failure(exc, api, args, "a request on admission policies (installing them needs RBAC to "
                                 "create, update, list and delete validatingadmissionpolicies and "
                                 "validatingadmissionpolicybindings, see docs/fencing.md)"), 1)
    finally:
        api.close()
    for verb, names in (("created", change.created), ("updated", change.updated), ("deleted", change.deleted)):
        if len(names) > LIST_AT_MOST:  # one binding per shard: a count reads better than a thousand lines
            print(f"{verb} {len(names)} objects ({names[0]} ... {names[-1]})", file=out)
            continue
        for name in names:
            print(f"{verb} {name}", file=out)
    if args.action == "install":
        print(f"fencing of {t.resource_id} for group {t.group!r} (Leases in {t.namespace!r}) installed for shards "
              f"0..{shards - 1}; in force within seconds (until then fenced writes may be refused with 'no params "
              f"found'); before a reshard, run it again with --shards <new count>", file=out)
    elif not change.deleted:
        print(f"no fencing of {t.resource_id} for group {t.group!r} (Leases in {t.namespace!r}) was installed",
              file=out)
    return 0


def _print(objects: list[dict[str, Any]], fmt: str, out: TextIO) -> None:
    if fmt == "json":
        json.dump({"apiVersion": "v1", "kind": "List", "items": objects}, out, indent=2)
        out.write("\n")
        return
    import yaml

    out.write(yaml.safe_dump_all(objects, sort_keys=False))


def _fail(message: str, code: int) -> int:
    print(f"shardlease fencing: {message}", file=sys.stderr)
    return code
