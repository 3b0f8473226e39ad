"""Languages per stream (issue 18): parsing, precedence, validation against the STS's pairs, the
settings that compose each language's worker, and the supervisor keyed by (stream, language).
Fakes only (no process, no network, hand-driven clock)."""

from __future__ import annotations

import itertools
import re
import signal
import string
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from livedub.orchestrator.languages import (
    LanguageOrigin,
    RefusalReason,
    StsLanguages,
    is_language,
    parse_language_list,
    plan_languages,
    query_languages,
)
from livedub.orchestrator.media_server import PATH_RE
from livedub.orchestrator.service import OrchestratorService
from livedub.orchestrator.settings import OrchestratorSettings
from livedub.orchestrator.supervisor import StreamState
from livedub.protocol import LANGUAGES_ROUTE, LanguagePair, LanguagesInfo
from livedub.sts.backend import EchoBackend
from livedub.sts.server import StsServer
from livedub.sts.settings import StsSettings
from livedub.typed import ValidationError
from tests.unit.test_orchestrator_supervisor import eventually, make, state

DUB_ES_CA = LanguagesInfo(
    backend="dub",
    pairs=[LanguagePair(source="en", target="es"), LanguagePair(source="en", target="ca")],
)


def plan(query: str | None = None, support: LanguagesInfo | None = None, **kw: Any) -> Any:
    args: dict[str, Any] = {
        "defaults": [], "overrides": [], "use_query": True, "source": "en", "max_languages": 4,
        "support": support,
    }  # fmt: skip
    stream_id = kw.pop("stream_id", "news")
    args.update(kw)
    return plan_languages(stream_id, query, **args)


# --- parsing ---------------------------------------------------------------------------------------


def test_language_codes() -> None:
    assert [c for c in ("es", "ca", "spa", "gl") if is_language(c)] == ["es", "ca", "spa", "gl"]
    for bad in ("in", "out", "e", "espa", "ES", "e1", "es-419", "", "../", "é"):
        assert not is_language(bad), bad
    assert parse_language_list(" es, ca,,es ") == ["es", "ca"]
    with pytest.raises(ValueError, match="not a language code"):
        parse_language_list("es,out")


@pytest.mark.parametrize(
    ("query", "tokens"),
    [
        (None, None),
        ("", None),
        ("user=a&pass=b", None),
        ("lang=es,ca", ["es", "ca"]),
        ("?lang=ES,%20ca", ["es", "ca"]),
        ("lang=es&x=1&lang=gl", ["es", "gl"]),
        ("lang=", []),
        ("lang=es,,ca,", ["es", "ca"]),
    ],
)
def test_query_languages(query: str | None, tokens: list[str] | None) -> None:
    assert query_languages(query) == tokens


# --- planning ----------------------------------------------------------------------------------------


def test_nothing_configured_is_one_worker_as_before() -> None:
    p = plan("user=x")
    assert (p.languages, p.origin, p.refused, p.workers) == ([], LanguageOrigin.NONE, [], [None])


def test_precedence_query_then_override_then_default() -> None:
    kw: dict[str, Any] = {"defaults": ["es"], "overrides": [("news-.*", ["ca", "gl"])]}
    assert plan(None, stream_id="news-1", **kw).languages == ["ca", "gl"]
    assert plan(None, stream_id="news-1", **kw).origin == LanguageOrigin.OVERRIDE
    assert plan(None, stream_id="xnews-1", **kw).languages == ["es"]  # patterns match fully
    assert plan("lang=gl,es", stream_id="news-1", **kw).languages == ["gl", "es"]
    assert plan("lang=gl,es", stream_id="news-1", **kw).origin == LanguageOrigin.QUERY
    assert plan("lang=gl", use_query=False, **kw).languages == ["es"]  # query ignored when off


def test_unsupported_and_invalid_languages_are_refused_the_others_start() -> None:
    p = plan("lang=es,fr,en,xx1,ca,out,es", support=DUB_ES_CA)
    assert p.languages == ["es", "ca"] and p.origin == LanguageOrigin.QUERY and p.sts_checked
    reasons = {r.language: r.reason for r in p.refused}
    assert reasons == {
        "fr": RefusalReason.UNSUPPORTED,
        "en": RefusalReason.SAME_AS_SOURCE,
        "xx1": RefusalReason.INVALID,
        "out": RefusalReason.INVALID,
    }
    fr = next(r for r in p.refused if r.language == "fr")
    assert "en->fr" in fr.message and "available: en->es, en->ca" in fr.message
    assert fr.as_json() == {"language": "fr", "reason": "unsupported", "origin": "query", "message": fr.message}


def test_too_many_languages() -> None:
    p = plan("lang=es,ca,gl,eo", max_languages=2)
    assert p.languages == ["es", "ca"]
    assert [(r.language, r.reason) for r in p.refused] == [
        ("gl", RefusalReason.TOO_MANY), ("eo", RefusalReason.TOO_MANY),
    ]  # fmt: skip


def test_a_query_that_leaves_nothing_falls_back_to_the_configured_list() -> None:
    p = plan("lang=fr", support=DUB_ES_CA, defaults=["ca", "de"])
    assert p.languages == ["ca"] and p.origin == LanguageOrigin.DEFAULT
    assert [(r.language, r.reason, r.origin) for r in p.refused] == [
        ("fr", RefusalReason.UNSUPPORTED, LanguageOrigin.QUERY),
        ("de", RefusalReason.UNSUPPORTED, LanguageOrigin.DEFAULT),
    ]
    nothing = plan("lang=fr", support=DUB_ES_CA)
    assert nothing.workers == [None] and nothing.origin == LanguageOrigin.NONE


def test_unknown_sts_support_refuses_nothing_as_unsupported() -> None:
    assert plan("lang=fr,es").languages == ["fr", "es"]
    assert plan("lang=fr,es", support=LanguagesInfo(backend="echo", any_pair=True)).languages == ["fr", "es"]


# --- settings ------------------------------------------------------------------------------------------


def test_language_settings_validate(monkeypatch: pytest.MonkeyPatch) -> None:
    # as the flags give them (text: the overrides as JSON)
    s = OrchestratorSettings.load(
        {"languages": "es, ca", "language_overrides": '{"news-.*": "gl, eo"}'}
    )
    assert s.default_languages() == ["es", "ca"]
    assert s.language_override_list() == [("news-.*", ["gl", "eo"])]
    for bad in ({"languages": "es,out"}, {"language_overrides": "[1]"}, {"language_overrides": '{"(": "es"}'},
                {"language_overrides": '{"a": "e"}'}, {"max_languages": 0}):  # fmt: skip
        with pytest.raises(ValidationError):
            OrchestratorSettings.load(bad)
    built = OrchestratorSettings(language_overrides={"n.*": "gl, eo"})  # in code: the same rules
    assert built.language_overrides == {"n.*": "gl,eo"}
    monkeypatch.setenv("ORCH_LANGUAGE_OVERRIDES", '{"x": "ca"}')
    assert OrchestratorSettings.load().language_override_list() == [("x", ["ca"])]


def test_source_language_is_the_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORKER_SOURCE_LANGUAGE", raising=False)
    assert OrchestratorSettings().worker_source_language() == "en"
    monkeypatch.setenv("WORKER_SOURCE_LANGUAGE", "es")
    assert OrchestratorSettings().worker_source_language() == "es"
    args = "--segment-s 2 --source-language de --source-language=fr"
    assert OrchestratorSettings(worker_args=args).worker_source_language() == "fr"


def test_each_language_worker_gets_its_target_output_and_mirror() -> None:
    s = OrchestratorSettings(worker_command="w", worker_args="--target-language de")
    assert s.worker_argv("news", 9100, "es", True)[-2:] == ["--target-language", "es"]  # ours wins
    assert s.worker_argv("news", 9100, "ca", False)[-3:] == ["--target-language", "ca", "--no-captions-source"]
    assert s.worker_argv("news", 9100) == ["w", "--stream-id", "news", "--metrics-port", "9100",
                                           "--target-language", "de"]  # fmt: skip
    first, other = s.worker_env("news", "es", True), s.worker_env("news", "ca", False)
    assert first["WORKER_OUTPUT_URL"] == "rtmp://127.0.0.1:1935/live/news/out"
    assert first["WORKER_MIRROR_OUTPUT_URL"] == "rtmp://127.0.0.1:1935/live/news/es"
    assert other["WORKER_OUTPUT_URL"] == "rtmp://127.0.0.1:1935/live/news/ca"
    assert other["WORKER_MIRROR_OUTPUT_URL"] == ""
    assert "WORKER_MIRROR_OUTPUT_URL" not in s.worker_env("news")
    assert s.output_paths("news", "es", True) == ["live/news/out", "live/news/es"]
    assert s.output_paths("news", "ca", False) == ["live/news/ca"]
    assert s.output_paths("news", None, True) == ["live/news/out"]
    with pytest.raises(ValueError):
        s.worker_argv("news", 9100, "out")


# --- media paths -----------------------------------------------------------------------------------------


def test_media_paths_serve_exactly_the_languages() -> None:
    for code in ("es", "ca", "spa", "in", "out"):
        assert PATH_RE.fullmatch(f"live/news/{code}"), code
    for bad in ("live/news/ES", "live/news/e", "live/news/espa", "live/news/es/x"):
        assert PATH_RE.fullmatch(bad) is None, bad


def test_mediamtx_language_path_regex_is_exactly_a_language() -> None:
    conf = yaml.safe_load((Path(__file__).resolve().parents[2] / "deploy" / "mediamtx.yml").read_text())
    in_key, out_key, lang_key = list(conf["paths"])
    assert lang_key.startswith("~") and lang_key not in (in_key, out_key)
    lang_re = re.compile(lang_key[1:])
    codes = ["".join(p) for n in (1, 2, 3, 4) for p in itertools.product(string.ascii_lowercase, repeat=n)]
    for code in codes:
        assert (lang_re.search(f"live/news/{code}") is not None) == is_language(code), code
    assert lang_re.search("live/a b/es") is None and lang_re.search("live/news/es/x") is None
    worker = next(u for u in conf["authInternalUsers"] if u["user"] == "worker")
    assert {"action": "publish", "path": lang_key} in worker["permissions"]


# --- the STS's languages -------------------------------------------------------------------------------------


class _Dub(EchoBackend):
    name = "dub"

    def languages(self) -> LanguagesInfo:
        return DUB_ES_CA


async def test_sts_reports_its_languages_and_the_orchestrator_caches_them() -> None:
    for backend, expected in ((EchoBackend(), {"backend": "echo", "any_pair": True, "pairs": []}),
                              (_Dub(), DUB_ES_CA.to_wire())):  # fmt: skip
        sts = StsServer(StsSettings(port=0), backend=backend)
        sts.ready = True
        async with TestClient(TestServer(sts.app)) as client:
            resp = await client.get(LANGUAGES_ROUTE)
            assert resp.status == 200 and await resp.json() == expected
            langs = StsLanguages(str(client.make_url("")))
            info = await langs.get()
            assert info is not None and info.to_wire() == expected
            await client.close()
            assert await langs.get() is info  # cached: the server is gone


async def test_sts_languages_unknown_when_the_service_cannot_say() -> None:
    app = web.Application()
    async with TestClient(TestServer(app)) as client:  # 404 on every route
        assert await StsLanguages(str(client.make_url(""))).get() is None


# --- supervisor: one worker per (stream, language) -------------------------------------------------------------


async def test_ready_starts_one_worker_per_language_first_one_publishes_out() -> None:
    sup, _, launcher, _ = make()
    result = sup.on_ready("news", source_id="s1", languages=["es", "ca"])
    assert (result.action, result.languages) == ("started", ("es", "ca"))
    await eventually(lambda: sup.workers_running() == 2)
    es, ca = launcher.procs
    assert (es.spec.language, ca.spec.language) == ("es", "ca")
    assert es.spec.label == "news/es"
    assert es.spec.env["WORKER_OUTPUT_URL"].endswith("/live/news/out")
    assert es.spec.env["WORKER_MIRROR_OUTPUT_URL"].endswith("/live/news/es")
    assert ca.spec.env["WORKER_OUTPUT_URL"].endswith("/live/news/ca")
    assert "--no-captions-source" in ca.spec.argv and "--no-captions-source" not in es.spec.argv
    rows = {i.language: i for i in sup.streams()}
    assert set(rows) == {"es", "ca"} and rows["es"].outputs == ("live/news/out", "live/news/es")
    assert rows["es"].as_json()["language"] == "es" and rows["ca"].as_json()["outputs"] == ["live/news/ca"]
    assert sup.get("news") == rows["es"] and sup.get("news", "ca") == rows["ca"]
    assert sup.get("news", "gl") is None
    assert sorted((sid, lang) for sid, lang, _ in sup.worker_targets()) == [("news", "ca"), ("news", "es")]
    # idempotent; a ready with another language adds it, never as the primary
    assert sup.on_ready("news", source_id="s1", languages=["es", "ca"]).action == "already_active"
    added = sup.on_ready("news", source_id="s1", languages=["gl", "es"])
    assert added.languages == ("es", "ca", "gl")
    await eventually(lambda: sup.workers_running() == 3)
    assert launcher.procs[2].spec.env["WORKER_OUTPUT_URL"].endswith("/live/news/gl")
    # a ready without languages never adds a second publisher of live/<id>/out
    sup.on_ready("news", source_id="s1")
    await eventually(lambda: sup.workers_running() == 3)
    assert len(launcher.procs) == 3


async def test_a_language_crash_restarts_only_that_language() -> None:
    sup, clock, launcher, _ = make(backoff_initial_s=1.0)
    sup.on_ready("news", languages=["es", "ca"])
    await eventually(lambda: sup.workers_running() == 2)
    es, ca = launcher.procs
    ca.exit(-9)
    await eventually(lambda: state(sup, "news") == StreamState.RUNNING and sup.get("news", "ca").state == StreamState.BACKOFF)  # type: ignore[union-attr]
    await clock.advance(1.0)
    await eventually(lambda: len(launcher.procs) == 3 and sup.workers_running() == 2)
    assert launcher.procs[2].spec.language == "ca"
    assert (sup.get("news", "ca").restarts, sup.get("news", "es").restarts) == (1, 0)  # type: ignore[union-attr]
    assert sup.get("news", "es").pid == es.pid and es.signals == []  # type: ignore[union-attr]


async def test_not_ready_stops_every_language_and_capacity_counts_workers() -> None:
    sup, clock, launcher, _ = make(grace_s=5.0, max_streams=3)
    sup.on_ready("news", source_id="s1", languages=["es", "ca"])
    await eventually(lambda: sup.workers_running() == 2)
    from livedub.orchestrator.supervisor import CapacityError

    with pytest.raises(CapacityError):
        sup.on_ready("sport", languages=["es", "ca"])  # 2 + 2 > 3: nothing of it starts
    assert sup.get("sport") is None
    assert sup.on_not_ready("news", source_id="s1").action == "grace_started"
    await clock.advance(5.0)
    await eventually(lambda: sup.workers_running() == 0)
    assert [p.signals for p in launcher.procs] == [[signal.SIGTERM], [signal.SIGTERM]]
    assert {i.state for i in sup.streams()} == {StreamState.STOPPED}
    # a new publish with one language: the old rows of the other language go
    sup.on_ready("news", source_id="s2", languages=["ca"])
    await eventually(lambda: sup.workers_running() == 1)
    assert [(i.language, i.outputs) for i in sup.streams()] == [("ca", ("live/news/out", "live/news/ca"))]


async def test_service_merges_worker_metrics_with_their_language() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from livedub.orchestrator.service import merge_metric_texts

    page = "# TYPE worker_segments_total counter\nworker_segments_total{source=\"dubbed\",stream_id=\"x\"} 2\n"
    families, problems = merge_metric_texts([("news", "es", page), ("news", page)])
    assert problems == []
    (fam,) = families
    assert sorted(tuple(sorted(s.labels.items())) for s in fam.samples) == [
        (("language", "es"), ("source", "dubbed"), ("stream_id", "news")),
        (("source", "dubbed"), ("stream_id", "news")),
    ]
    assert list(text_string_to_metric_families(page))  # the input itself is valid


async def test_refused_languages_are_logged_once_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    service = OrchestratorService(OrchestratorSettings(languages="es", sts_url="http://127.0.0.1:9"))

    async def support() -> LanguagesInfo:
        return DUB_ES_CA

    service.sts_languages.get = support  # type: ignore[method-assign]
    for _ in range(3):  # the same publisher's repeated ready: one log line, one count
        plan_ = await service.plan_languages("news", "lang=fr,ca", "src-1")
        assert plan_.languages == ["ca"]
    await service.plan_languages("news", "lang=fr,ca", "src-2")  # another publish: again
    lines = [r for r in caplog.records if r.getMessage() == "language refused"]
    assert len(lines) == 2
    value = service.registry.get_sample_value("orchestrator_languages_refused_total", {"reason": "unsupported"})
    assert value == 2
