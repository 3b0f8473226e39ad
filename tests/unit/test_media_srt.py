"""SRT URLs (`livedub.media.srt.parse_srt_url`) and what happens without libsrt: a `srt://`
input or output fails at once with its exit code (10 / 12), before any I/O."""

from __future__ import annotations

import pytest

from livedub.exitcodes import ExitCode
from livedub.media import srt
from livedub.media.errors import InputUnavailable, MediaError, OutputFailed
from livedub.media.pipeline import MediaPipeline
from livedub.media.settings import MediaSettings
from livedub.media.srt import SrtUrl, parse_srt_url
from livedub.media.urls import missing_protocol


def test_url_defaults_to_a_caller_with_libsrt_defaults() -> None:
    assert parse_srt_url("srt://127.0.0.1:9000") == SrtUrl("127.0.0.1", 9000)
    assert parse_srt_url("SRT://media.example:1") == SrtUrl("media.example", 1)
    assert parse_srt_url("srt://[::1]:9000?mode=listener").host == "::1"


def test_url_options() -> None:
    u = parse_srt_url("srt://h:8890?mode=caller&latency=200&streamid=read:live/x&passphrase=a%20b%26c&pbkeylen=32")
    assert u == SrtUrl("h", 8890, "caller", 200, "read:live/x", "a b&c", 32)
    # MediaMTX's "#!::" stream ids need no escaping: the query is split off by hand.
    assert parse_srt_url("srt://h:8890?streamid=#!::r=live/x,m=publish").streamid == "#!::r=live/x,m=publish"
    # A listener may omit the host (binds every address) and the mode is case-insensitive.
    assert parse_srt_url("srt://:9000?mode=LISTENER") == SrtUrl("", 9000, "listener")
    assert parse_srt_url("srt://h:1?").mode == "caller"


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("srt://h:1?pkt_size=1316", "unsupported SRT URL option 'pkt_size'"),
        ("srt://h:1?mode=rendezvous", "unsupported SRT mode 'rendezvous'"),
        ("srt://h?mode=caller", "has no port"),
        ("srt://h:99999", "bad port"),
        ("srt://:9000", "a caller needs a host"),
        ("srt://h:1?latency=2s", "must be integers"),
        ("rtmp://h:1/x", "not an srt:// URL"),
    ],
)
def test_bad_urls_are_refused(url: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_srt_url(url)


def test_srt_is_available_when_libsrt_loads() -> None:
    if srt.libsrt_error() is not None:
        pytest.skip(f"no libsrt here: {srt.libsrt_error()}")
    assert missing_protocol("srt://127.0.0.1:1?mode=caller") is None


@pytest.mark.parametrize(
    ("field", "error", "code"),
    [("input_url", InputUnavailable, ExitCode.INPUT_UNAVAILABLE), ("output_url", OutputFailed, ExitCode.OUTPUT_FAILED)],
)
def test_without_libsrt_srt_fails_at_once_with_its_exit_code(
    monkeypatch: pytest.MonkeyPatch, field: str, error: type[MediaError], code: ExitCode
) -> None:
    def no_libsrt() -> None:
        raise srt.SrtError("libsrt not found (install libsrt1.5-gnutls): libsrt.so.1.5: no such file")

    monkeypatch.setattr(srt, "_load", no_libsrt)
    assert missing_protocol("srt://127.0.0.1:1") == "srt"
    urls = {"input_url": "/tmp/in.mp4", "output_url": "/tmp/out.mp4", field: "srt://127.0.0.1:1"}
    pipeline = MediaPipeline(MediaSettings(**urls))
    with pytest.raises(error, match="SRT is not available: libsrt not found") as exc:
        pipeline._check_protocols()
    assert exc.value.exit_code == code


@pytest.mark.parametrize("field", ["input_url", "output_url"])
def test_a_bad_srt_url_fails_at_once(field: str) -> None:
    if srt.libsrt_error() is not None:
        pytest.skip("no libsrt here")
    urls = {"input_url": "/tmp/in.mp4", "output_url": "/tmp/out.mp4", field: "srt://h:1?mode=rendezvous"}
    with pytest.raises(MediaError, match="unsupported SRT mode") as exc:
        MediaPipeline(MediaSettings(**urls))._check_protocols()
    assert exc.value.exit_code == (ExitCode.INPUT_UNAVAILABLE if field == "input_url" else ExitCode.OUTPUT_FAILED)


def test_a_bad_option_value_is_named_in_the_error() -> None:
    if srt.libsrt_error() is not None:
        pytest.skip("no libsrt here")
    writer = srt.SrtWriter("srt://127.0.0.1:1?passphrase=short", timeout_s=1)
    with pytest.raises(srt.SrtError, match=r"option passphrase \(10-79 characters\)"):
        writer.connect()  # refused by libsrt before any I/O
    writer.close()
    assert not writer.connected
