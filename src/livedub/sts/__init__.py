"""The Echo STS service: a Socket.IO speech-to-speech test double implementing the Audio Fragment
Protocol (`livedub.protocol`), with test controls, health, metrics and a per-stream debug history.

Entry points: `livedub sts` (cli), `run_sts(settings)` (server, in-process), `StsCore` (logic),
`Backend` / `EchoBackend` (backend), `StsTestClient` (testing). Never imports the worker.
"""
