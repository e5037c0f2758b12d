"""The admin endpoint, served only when the DevServer runs with ``faults=True`` (``--faults``).

- ``GET /_shardlease/faults``: the current fault settings.
- ``POST /_shardlease/faults`` with a JSON command (see :meth:`Faults.apply`): change them; answers
  with the new settings. ``{}`` just reads them.
- ``GET /_shardlease/requests``: request counters ``{"requests": [{"verb", "resource", "count"}]}`` and
  watch events delivered per client ``"watchEvents": [{"client", "events"}]``;
  ``DELETE`` resets them.
- ``POST /_shardlease/compact``: forget the watch event history (older resourceVersions get 410).

These paths are never subject to injected faults, so a test can always undo what it set.
"""

from __future__ import annotations

from .counters import RequestCounter
from .faults import Faults
from .httpserver import Request, Response, json_response, parse_json
from .status import bad_request, method_not_allowed, path_not_found
from .store import Store


def handle(request: Request, path: str, faults: Faults, counter: RequestCounter, store: Store) -> Response:
    method = request.method
    if path == "/_shardlease/faults":
        if method == "POST":
            try:
                faults.apply(parse_json(request.body or b"{}"))
            except (ValueError, TypeError) as exc:
                raise bad_request(f"bad fault settings: {exc}") from None
        elif method != "GET":
            raise method_not_allowed(method)
        return json_response(200, faults.snapshot())
    if path == "/_shardlease/requests":
        if method == "DELETE":
            counter.reset()
        elif method != "GET":
            raise method_not_allowed(method)
        counts = [{"verb": verb, "resource": resource, "count": count}
                  for (verb, resource), count in sorted(counter.snapshot().items())]
        watch = [{"client": client, "events": events} for client, events in sorted(counter.watch_events().items())]
        return json_response(200, {"requests": counts, "watchEvents": watch})
    if path == "/_shardlease/compact" and method == "POST":
        store.compact()
        return json_response(200, {"resourceVersion": str(store.rv)})
    raise path_not_found()
