"""The registry /metrics serves, in the API workers and in `vmctl exporter`.

API metrics (the request histogram) and the scheduler's (appliance/metrics_scheduler.py)
are recorded in each gunicorn worker (and the scheduler's also in the FUSE child
and the serve process).
Under `vmctl serve` the workers run in prometheus_client's multiprocess mode
(PROMETHEUS_MULTIPROC_DIR, exporter/shared_metrics.py), and
MultiProcessCollector sums every worker's files, so whichever worker answers
the scrape reports the whole API. Without that variable (tests, a single
process) the histogram is registered directly.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import falcon
from falcon.routing import CompiledRouter
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from appliance import metrics_scheduler
from appliance.store import Store
from exporter.appliance import ApplianceCollector, store_targets, store_uptimes
from exporter.collector import LibvirtCollector, Target
from exporter.shared_metrics import multiprocess_dir
from exporter.unchanged_store import MAX_AGE, UnchangedStore

REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
# registry=None: it is registered where it is served (see build_registry).
REQUEST_DURATION = Histogram(
    "vmappliance_api_request_duration_seconds",
    "REST API request duration, by route template, method and status.",
    ["route", "method", "status"], buckets=REQUEST_BUCKETS, registry=None)


# The method label takes these values and OTHER: the HTTP server passes any method token
# through, and a label per made-up method (sent without the token, by anyone who can
# connect) would be a new series in every worker's file and every scrape, for good.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestMetrics:
    """Falcon middleware: one histogram observation per request, labelled by
    the route template (/v1/vms/{name}), never the raw path; "unmatched" for
    paths no route takes.

    Falcon sets `req.uri_template` once it has routed the request. A request
    refused before routing (401 from the token check's process_request) has
    none, so it is matched here against the app's router, which the app is
    given (`falcon.App(router=...)`) rather than read out of it."""

    def __init__(self, router: CompiledRouter) -> None:
        self.router = router
        # The histogram's child per (route, method, status), kept here: labels()
        # takes the metric's lock and builds its key on every call (a tenth of the
        # middleware's cost per request). Bounded as the labels are: templates,
        # KNOWN_METHODS and OTHER, the statuses the app answers.
        self._children: dict[tuple[str, str, int], Any] = {}

    def _route_of(self, req: falcon.Request) -> str:
        if req.uri_template:
            return req.uri_template
        try:
            found = self.router.find(req.path, req)
        except Exception:  # a label is not worth failing a request for
            found = None
        return found[3] if found is not None and found[3] else "unmatched"

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.metrics_started = time.perf_counter()

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: object,
                         req_succeeded: bool) -> None:
        started = getattr(req.context, "metrics_started", None)
        if started is None:
            return
        method = req.method if req.method in KNOWN_METHODS else "OTHER"
        key = (self._route_of(req), method, resp.status_code)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = REQUEST_DURATION.labels(key[0], method, str(key[2]))
        child.observe(time.perf_counter() - started)


class ScrapeDuration:
    """The whole scrape's own duration, measured around the other collectors."""

    def __init__(self, collectors):
        self.collectors = collectors

    def collect(self):
        started = time.perf_counter()
        for collector in self.collectors:
            yield from collector.collect()
        family = GaugeMetricFamily(
            "vmappliance_exporter_scrape_duration_seconds",
            "Time the exporter took to collect this scrape (without serialising it).")
        family.add_metric([], time.perf_counter() - started)
        yield family


def build_registry(libvirt_uri: str, host_name: str = "local", api_metrics: bool = True,
                   deadline: float = 5.0, all_domains: bool = False,
                   appliance: str | None = None, **collector_args) -> CollectorRegistry:
    """`vmctl exporter`'s registry (the API's /metrics is api_metrics_resource's, over its
    store). The appliance's domains are those whose <metadata> names `appliance` (the
    instance id the appliance writes at define), or any appliance's with appliance=None,
    labelled by their libvirt names; all_domains: also the libvirt domains no appliance
    manages (managed="false"); off by default, as they may be other tenants'
    (SECURITY.md). Everything is read fresh at each scrape."""
    registry = CollectorRegistry(auto_describe=False)
    if api_metrics:
        _register_api_metrics(registry)
    target = Target(host_name, libvirt_uri)
    registry.register(ScrapeDuration([LibvirtCollector(
        lambda: [target], deadline=deadline, ours_only=not all_domains,
        appliance=appliance, **collector_args)]))
    return registry


def _register_api_metrics(registry: CollectorRegistry) -> None:
    """The request histogram and the scheduler's metrics: every process's, summed from
    the multiprocess directory under `vmctl serve`, else this process's."""
    if multiprocess_dir():
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(REQUEST_DURATION)
        for collector in metrics_scheduler.collectors():
            registry.register(collector)


def api_metrics_resource(store: Store, libvirt_uri: str, heartbeat_age: float | None = None,
                         all_domains: bool = False,
                         uri_allowed: Callable[[str], bool] = lambda uri: True,
                         connect_uri: Callable[[str], str] = lambda uri: uri,
                         max_age: float = MAX_AGE) -> ApiMetricsResource:
    """The API's GET /metrics: the store's VMs (the VM id is the domain UUID) and its
    families, with the store's part kept while the store is unchanged, for at most max_age seconds
    (exporter/unchanged_store.py): the libvirt families and the API's own
    histograms are read at every scrape."""
    unchanged = UnchangedStore(store, max_age)
    targets = store_targets(store, libvirt_uri, uri_allowed, connect_uri)
    registry = CollectorRegistry(auto_describe=False)
    _register_api_metrics(registry)
    registry.register(ScrapeDuration([LibvirtCollector(
        lambda: unchanged.get("targets", targets),
        lambda: unchanged.get("names", store.vm_ids_and_names),
        uptimes=store_uptimes(
            store, running_since=lambda: unchanged.get("running_since", store.running_since)),
        managed_only=not all_domains)]))
    families = CollectorRegistry(auto_describe=False)
    families.register(ApplianceCollector(store, heartbeat_age))
    return ApiMetricsResource(
        registry, lambda: unchanged.get("families", lambda: generate_latest(families)))


class MetricsResource:
    """GET /metrics. Who may read it is the API's token check (appliance/api/auth.py):
    the token is needed unless the admin set metrics_public (Prometheus sends it
    with `authorization: {credentials_file: HOME/token}`)."""

    def __init__(self, registry: CollectorRegistry):
        self.registry = registry

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.data = generate_latest(self.registry)
        resp.content_type = CONTENT_TYPE_LATEST


class ApiMetricsResource(MetricsResource):
    """GET /metrics of the API: the registry's families (read at each scrape), then the
    store's, as `store_text` gives them (kept while the store is unchanged).

    The store's part is made in a thread of its own while this one waits for
    libvirt (most of a scrape's time is libvirtd waiting on each QEMU's monitor),
    so its queries and rendering add no wall time; one thread, so that each
    scrape finds what the previous one kept (the store's marks are per connection,
    hence per thread)."""

    def __init__(self, registry: CollectorRegistry, store_text: Callable[[], bytes]):
        super().__init__(registry)
        self.store_text = store_text
        # Started at the first scrape (after gunicorn forked the worker).
        self._store_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="metrics-store")

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        store_part = self._store_thread.submit(self.store_text)
        resp.data = generate_latest(self.registry) + store_part.result()
        resp.content_type = CONTENT_TYPE_LATEST
