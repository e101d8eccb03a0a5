"""The process-mining export of a release at 1M events: OCEL 2.0 JSON (and XES) as served before
(the stored log read whole, ``to_ocel`` into a dict, FastAPI's serialisation into one body) and
as streamed now (``ocel_chunks`` over the stored variants), side by side in one run.

    python bench/ocel.py                      # 1M published events (about 2 minutes on 2 cores)
    python bench/ocel.py --events 200000
    python bench/ocel.py --smoke              # 3,000 events, seconds: that it runs at all

A synthetic published log (``eventlog.PublishedLog``: variants of k to 2k-1 chains, 6 to 14
events each, the policy's activity, kind and template names, pseudonyms as ``make_release``
draws them) is stored twice in ``steering_releases``: in the form releases were stored in
before (one entry per chain) and in the stored form of now (each variant once with its
chains' pseudonyms). Each rendering runs in a fresh child process (spawned: its peak RSS is its
own) that reads the row through the ORM as the endpoint does and renders it with the release
metadata of the same row, so the two OCEL outputs must be the same bytes (compared by digest).
Then the API itself (uvicorn, as deployed) streams the export over HTTP to a client: time to the
first byte, total, and the server process's peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import secrets
import socket
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]  # bench/transitions.py
sys.path.insert(0, str(HERE.parent))                                      # shadows `transitions`

from bench import harness as h  # noqa: E402
from casemgmt.steering import eventlog  # noqa: E402
from casemgmt.steering.releases import SteeringRelease, activity_names  # noqa: E402

MiB = 1024 * 1024
PERIOD_OLD, PERIOD_NEW = "2026-Q1", "2026-Q2"


# --------------------------------------------------------------------------------------------
# The log


def synthetic_log(events: int, k: int, names: list[str], kinds: list[str], templates: list[str],
                  seed: int = 14) -> eventlog.PublishedLog:
    rng = random.Random(seed)
    traces: list[eventlog.PublishedTrace] = []
    published = 0
    while published < events:
        week, steps = 0, [eventlog.PublishedEvent(eventlog.CHAIN_BEGUN, eventlog.CASE_MANAGEMENT_TITLE, 0)]
        for name in sorted(rng.sample(names, min(len(names), rng.randint(4, 12))), key=names.index):
            week += rng.choice((0, 0, 1, 2, 3, 6, 10))
            steps.append(eventlog.PublishedEvent(name, rng.choice(kinds), week))
        steps.append(eventlog.PublishedEvent(eventlog.CHAIN_ENDED["chain_completed"], eventlog.CASE_MANAGEMENT_TITLE,
                                             week + rng.randint(0, 4)))
        shared, template = tuple(steps), rng.choice(templates)
        for _ in range(rng.randint(k, 2 * k - 1)):
            traces.append(eventlog.PublishedTrace(f"kette-{secrets.token_hex(8)}", template, shared))
            published += len(shared)
    traces.sort(key=lambda t: t.id)
    variants = len({id(t.events) for t in traces})
    stats = eventlog.LogStats(k=k, chains_total=len(traces) + 40, chains_published=len(traces), chains_cut=len(traces) // 9,
                              events_total=published + 900, events_published=published, activities_merged=3,
                              templates_merged=1, paths_published=variants)
    acts = sorted({e.activity for t in traces for e in t.events}, key=lambda a: (a != eventlog.CHAIN_BEGUN, a))
    return eventlog.PublishedLog(tuple(traces), stats, tuple(acts), tuple(sorted({e.kind for t in traces for e in t.events})))


def old_stored_form(log: eventlog.PublishedLog) -> dict[str, Any]:
    """What ``make_release`` stored before the variants: one entry per chain."""
    return {"activities": list(log.activities), "kinds": list(log.kinds), "stats": log.stats.as_dict(),
            "traces": [{"id": t.id, "template": t.template, "events": [[e.activity, e.kind, e.week] for e in t.events]}
                       for t in log.traces]}


# --------------------------------------------------------------------------------------------
# One rendering in a child process


def render_child(url: str, mode: str, number: int, meta_number: int, meta_period: str) -> dict[str, Any]:
    """Read release ``number`` and render it as ``mode``; time to the first byte and in all,
    CPU, peak RSS, bytes and their digest."""
    import resource

    from fastapi.routing import APIRoute, serialize_response
    from starlette.responses import Response

    from sqlalchemy import select
    from sqlalchemy.orm import undefer

    from casemgmt.database import make_engine, make_sessionmaker
    from casemgmt.steering.releases import log_head, stored_log

    def served_before() -> dict:  # the route's signature before: FastAPI validates and serialises a dict
        raise NotImplementedError

    field = APIRoute("/exports/releases/{number}/ocel", endpoint=served_before).response_field
    engine = make_engine(url)
    factory = make_sessionmaker(engine)
    with factory() as session:  # connected and warm, as a serving process is
        session.get(SteeringRelease, -1)
    release = {"number": meta_number, "period": meta_period}
    rss0 = h.vm_kb("VmRSS") or 0
    cpu0, t0 = time.process_time(), time.perf_counter()
    digest, size, first = hashlib.sha256(), 0, None
    with factory() as session:
        if mode.endswith("streamed"):  # as the endpoint: the head now, the whole log after the first chunk
            def read() -> Any:
                with factory() as later:
                    return stored_log(later, number)

            stored: Any = eventlog.StoredLog(log_head(session, number), read)
        else:  # as before: the row with its log (event_log was not a deferred column then)
            stored = session.execute(select(SteeringRelease).options(undefer(SteeringRelease.event_log))
                                     .where(SteeringRelease.number == number)).scalar_one().event_log
        if mode == "ocel-before":
            doc = eventlog.to_ocel(eventlog.PublishedLog.from_dict(stored), release)
            body = asyncio.run(serialize_response(field=field, response_content=doc, dump_json=True))
            del doc
            chunks: Any = [Response(body, media_type="application/json").body]
            del body
        elif mode == "xes-before":
            chunks = [Response(eventlog.to_xes(eventlog.PublishedLog.from_dict(stored), release)).body]
        elif mode == "ocel-streamed":
            chunks = eventlog.ocel_chunks(stored, release)
        elif mode == "xes-streamed":
            chunks = eventlog.xes_chunks(stored, release)
        else:
            raise ValueError(mode)
        del stored
        for chunk in chunks:
            if first is None:
                first = time.perf_counter() - t0
            size += len(chunk)
            digest.update(chunk)
        del chunks
    total = time.perf_counter() - t0
    engine.dispose()
    return {"first_byte_s": first, "total_s": total, "cpu_s": time.process_time() - cpu0, "bytes": size,
            "sha256": digest.hexdigest()[:16], "rss_start_mib": rss0 / 1024, "peak_rss_mib": (h.vm_kb("VmHWM") or 0) / 1024,
            "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def render(bench: h.Bench, app: h.App, mode: str, number: int, meta: tuple[int, str]) -> dict[str, Any]:
    bench.phase(mode)
    h.log(f"  {mode}: release {number} ...")
    child_mode = "ocel-streamed" if mode == "ocel-streamed-old-row" else mode
    [out] = h.in_processes(bench, render_child, [(app.url, child_mode, number, *meta)], timeout=3600, what=mode)
    h.log(f"    first byte {out['first_byte_s']:.2f} s, total {out['total_s']:.2f} s, peak RSS {out['peak_rss_mib']:.0f} MiB")
    return out


# --------------------------------------------------------------------------------------------
# Over HTTP


def server_main(url: str, key_dir: str, port: int, master_b64: str) -> None:
    import uvicorn

    from casemgmt.app import create_app
    from casemgmt.config import Settings

    app = create_app(Settings(database_url=url, dev_key_dir=Path(key_dir), master_key=master_b64))
    try:
        uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    except KeyboardInterrupt:
        pass


def _status_kib(pid: int, name: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def over_http(bench: h.Bench, app: h.App, numbers: list[int]) -> dict[str, Any]:
    import httpx

    from casemgmt.auth.tokens import mint_dev_token
    from casemgmt.config import Settings

    bench.phase("http")
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="casemgmt-bench-keys-") as key_dir:
        settings = Settings(database_url=app.url, dev_key_dir=Path(key_dir))
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = bench.children.start(bench.ctx.Process(
            target=server_main, args=(app.url, key_dir, port, app.cfg()["master_key"]), name="bench-uvicorn"))
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            if not server.is_alive():
                raise RuntimeError(f"the API server exited with code {server.exitcode}")
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the API server did not come up within 90 s")
            time.sleep(0.2)
        try:
            for i, (label, path) in enumerate([("ocel", f"/exports/releases/{numbers[1]}/ocel"),
                                               ("ocel, a row stored before", f"/exports/releases/{numbers[0]}/ocel"),
                                               ("xes", f"/exports/releases/{numbers[1]}/xes")]):
                token = mint_dev_token(settings, f"bench.lg{i}", "ennetal_ki", ["steering"])
                rss0 = _status_kib(server.pid, "VmRSS") or 0
                cpu0 = h.cpu_seconds_of(server.pid) or 0.0
                size, first = 0, None
                t0 = time.perf_counter()
                with httpx.stream("GET", base + path, headers={"Authorization": f"Bearer {token}"},
                                  timeout=600) as response:
                    status = response.status_code
                    for chunk in response.iter_raw():
                        if first is None:
                            first = time.perf_counter() - t0
                        size += len(chunk)
                total = time.perf_counter() - t0
                out[label] = {"status": status, "first_byte_s": first, "total_s": total, "bytes": size,
                              "server_cpu_s": (h.cpu_seconds_of(server.pid) or 0.0) - cpu0,
                              "server_rss_before_mib": rss0 / 1024,
                              "server_peak_rss_mib": (_status_kib(server.pid, "VmHWM") or 0) / 1024,
                              "chunked": response.headers.get("transfer-encoding") == "chunked"}
                h.log(f"  HTTP {label}: {status}, first byte {first or 0:.2f} s, total {total:.2f} s, "
                      f"server peak RSS {out[label]['server_peak_rss_mib']:.0f} MiB")
        finally:
            if server.is_alive():
                server.terminate()
            server.join(15)
    return out


# --------------------------------------------------------------------------------------------


def run(bench: h.Bench, args: argparse.Namespace) -> None:
    db = bench.database("main")
    bench.server_facts(db.service_url)
    app = h.App.open(db.service_url, bench.master)
    steering = app.policies.steering
    names = sorted(set(activity_names(steering)[0].values()))
    kinds = sorted(set(steering.kind_titles.values()))
    templates = sorted(set(steering.template_titles.values()))
    t0 = time.perf_counter()
    log = synthetic_log(args.events, steering.min_variant_chains, names, kinds, templates)
    results = bench.results
    results["log"] = {"events": log.stats.events_published, "chains": len(log.traces),
                      "variants": log.stats.paths_published, "activities": len(log.activities), "k": log.stats.k}
    h.log(f"log: {log.stats.events_published:,} events, {len(log.traces):,} chains, "
          f"{log.stats.paths_published:,} variants ({time.perf_counter() - t0:.1f} s)")
    area = app.world.jurisdictions["kreis_ennetal"]
    now = datetime.now(UTC)
    rows = [(1, PERIOD_OLD, old_stored_form(log)), (2, PERIOD_NEW, log.as_dict())]
    del log
    with app.factory() as session:
        for number, period, stored in rows:
            session.add(SteeringRelease(number=number, area_jurisdiction_id=area, period=period, edition=1, revises=None,
                                        released_at=now, k=steering.k, document={"bench": "ocel"}, pattern={},
                                        event_log=stored))
            session.flush()
        session.commit()
    del rows
    with app.engine.connect() as conn:
        from sqlalchemy import text
        results["stored"] = {n: {"bytes": b, "on_disk": d} for n, b, d in conn.execute(text(
            "SELECT number, octet_length(event_log::text), pg_column_size(event_log) FROM steering_releases "
            "ORDER BY number"))}
    meta = (1, PERIOD_OLD)  # both rendered with the metadata of release 1: the same bytes expected
    results["render"] = {mode: render(bench, app, mode, number, meta) for mode, number in (
        ("ocel-before", 1), ("ocel-streamed", 2), ("ocel-streamed-old-row", 1), ("xes-before", 1), ("xes-streamed", 2))}
    if not args.skip_http:
        results["http"] = over_http(bench, app, [1, 2])
    app.dispose()


def report(results: dict[str, Any], args: argparse.Namespace) -> None:
    h.banner("casemgmt OCEL export", results)
    log = results.get("log")
    if log:
        h.heading("OCEL export")
        print(f"{log['events']:,} published events, {log['chains']:,} chains in {log['variants']:,} variants "
              f"(k={log['k']}), {log['activities']} activities")
    stored = results.get("stored") or {}
    if stored:
        old, new = stored.get(1, {}), stored.get(2, {})
        print(f"stored log (steering_releases.event_log): one entry per chain {old.get('bytes', 0) / MiB:.1f} MiB "
              f"(on disk {old.get('on_disk', 0) / MiB:.1f}), variants {new.get('bytes', 0) / MiB:.1f} MiB "
              f"(on disk {new.get('on_disk', 0) / MiB:.1f})")
    r = results.get("render") or {}
    if not r:
        return
    events = log["events"] + 1

    def line(o: dict[str, Any]) -> str:
        return (f"first byte {o['first_byte_s']:.2f} s, total {o['total_s']:.2f} s (CPU {o['cpu_s']:.2f} s), "
                f"{events / o['total_s']:,.0f} events/s, peak RSS {o['peak_rss_mib']:.0f} MiB "
                f"(+{o['peak_rss_mib'] - o['rss_start_mib']:.0f} over the {o['rss_start_mib']:.0f} MiB of a warm process), "
                f"{o['bytes'] / MiB:.1f} MiB, sha256 {o['sha256']}")

    names = {"ocel-before": "OCEL before (stored whole, to_ocel, FastAPI)", "ocel-streamed": "OCEL streamed (variants)",
             "ocel-streamed-old-row": "OCEL streamed, a row stored before", "xes-before": "XES before (to_xes, one body)",
             "xes-streamed": "XES streamed (variants)"}
    h.rows([(names[m], line(o)) for m, o in r.items()])
    before, now = r.get("ocel-before"), r.get("ocel-streamed")
    if before and now:
        same = before["sha256"] == now["sha256"] and before["bytes"] == now["bytes"]
        print(f"same bytes as before: {'yes' if same else 'NO'}")
        speed, by_cpu = h.ratio(before["total_s"], now["total_s"]), h.ratio(before["cpu_s"], now["cpu_s"])
        print(f"speed-up streamed / before (same run): {speed:.1f}x by wall time, {by_cpu:.1f}x by CPU")
    xb, xn = r.get("xes-before"), r.get("xes-streamed")
    if xb and xn:
        print(f"XES: same bytes {'yes' if xb['sha256'] == xn['sha256'] else 'NO'}, speed-up "
              f"{h.ratio(xb['total_s'], xn['total_s']):.1f}x, peak RSS {xb['peak_rss_mib']:.0f} -> {xn['peak_rss_mib']:.0f} MiB")
    http = results.get("http") or {}
    if http:
        h.heading("Over HTTP (uvicorn, as deployed)")
        h.rows([(label, f"{o['status']}, first byte {o['first_byte_s'] or 0:.2f} s, total {o['total_s']:.2f} s, "
                        f"{o['bytes'] / MiB:.1f} MiB{' chunked' if o['chunked'] else ''}, server CPU {o['server_cpu_s']:.2f} s, "
                        f"server peak RSS {o['server_peak_rss_mib']:.0f} MiB (before {o['server_rss_before_mib']:.0f})")
                for label, o in http.items()])
    if before and now:
        h.heading("Targets")
        # A release stored now (variants); one stored before is shown above, not a target.
        first = max([now["first_byte_s"]] + [o["first_byte_s"] or 0 for k, o in http.items() if k == "ocel"])
        h.target("first byte (s)", first, 1.0, True, f"{first:.2f} s, the slower of the child and HTTP")
        peak = max([now["peak_rss_mib"]] + [o["server_peak_rss_mib"] for k, o in http.items() if k == "ocel"])
        h.target("peak memory (MiB)", peak, 256, True, f"{peak:.0f} MiB of the whole process, the higher of the "
                 f"child and the API server; before {before['peak_rss_mib']:.0f} MiB")
        h.target("speed-up against before", speed, 4.0, False, f"{speed:.1f}x: {before['total_s']:.1f} s -> {now['total_s']:.1f} s")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=1_000_000, help="published events to aim at")
    p.add_argument("--skip-http", action="store_true", help="leave out the requests to the API over HTTP")
    h.common_args(p)
    return h.smoke_sizes(p.parse_args(), {"events": 3000})


if __name__ == "__main__":
    sys.exit(h.main("ocel", parse_args(), run, report))
