"""livedub benchmarks: `make bench` (`python -m bench.run`) and `make soak` (`python -m bench.soak`).

Tools that measure the real processes (media server, echo STS, workers, ffmpeg) on 127.0.0.1.
Nothing here is imported by the livedub package, and nothing here may touch ports it did not pick
itself or processes it did not start.
"""
