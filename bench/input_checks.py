"""Benchmark: what the input boundary (balsam.inputs) costs, beside the raw decoders in the same run.
Prints figures, never fails on them.

    python bench/input_checks.py [--tasks 50000] [--repeat 5] [--smoke]

Four readers, each timed as the raw decoder alone and with the boundary's checks:
- a Submit chunk of TaskSpecs: the coordinator's decoding of its tasks into specs (protobuf
  parsing, ``params_json``, the spec checks), and the same after ``check_message``;
- a site's sync envelope of job events: its parsing and its events' conversion (``site_message_body``,
  what the coordinator's sync worker makes of each), and the same after ``check_message``;
- a JSON document of jobs: ``json.loads``, and ``load_json`` plus ``check_value`` of every job;
- a YAML document of jobs: ``yaml.load`` with libyaml, and ``load_yaml`` (the node pass) plus
  ``check_value``.
Medians of ``--repeat`` runs; the ratio is checked / raw.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import yaml

from balsam.argo.servicers import _decode as decode
from balsam.inputs import check_message, check_value, load_json, load_yaml
from balsam.protos import argo_pb2 as pb
from balsam.wire.convert import site_message_body


def median_s(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="1,000 tasks, 2 runs: checks the bench runs (what the test runs)")
    args = parser.parse_args()
    if args.smoke:
        args.tasks, args.repeat = 1000, 2
    n = args.tasks
    jobs = [{"app": "sim", "name": f"job-{i}", "params": {"n": i, "infile": f"in-{i}.dat"}, "tags": {"size": "small"},
             "data": {"seed": i, "note": "x" * 20}} for i in range(n)]  # fmt: skip
    chunk = pb.SubmitChunk(name="bench", tasks=[
        pb.TaskSpec(name=f"t{i}", app="sim", params_json=json.dumps(job["params"]), parents=[f"t{i - 1}"] if i else [],
                    tags=job["tags"], resources=pb.Resources(nodes=1, wall_time_min=5.0)) for i, job in enumerate(jobs)
    ]).SerializeToString()  # fmt: skip
    envelope = pb.SiteEnvelope(ack=1, messages=[
        pb.SiteMessage(seq=i + 1, event=pb.TaskEvent(task_id=f"{i % 10 + 1}/t{i}", attempt=1, job_id=i + 1, from_state=5 + i % 3,
                                                     to_state=6 + i % 3, at={"seconds": 1_765_000_000 + i, "nanos": 123_456_000}))
        for i in range(n)
    ]).SerializeToString()  # fmt: skip
    text_json = json.dumps(jobs)
    text_yaml = yaml.safe_dump(jobs[: n // 10], default_flow_style=None)  # YAML is slow: a tenth of the jobs
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    def checked_submit() -> None:
        message = pb.SubmitChunk.FromString(chunk)
        check_message(message)
        decode(message.tasks)

    def checked_envelope() -> None:
        message = pb.SiteEnvelope.FromString(envelope)
        check_message(message)
        [site_message_body(m) for m in message.messages]

    def checked_json() -> None:
        for job in load_json(text_json, "bench", check=False):
            check_value(job, "job")

    def checked_yaml() -> None:
        data, _node = load_yaml(text_yaml, "bench")
        for job in data:
            check_value(job, "job")

    rows = [
        (f"Submit chunk, {n} tasks ({len(chunk) >> 10} KiB)", lambda: decode(pb.SubmitChunk.FromString(chunk).tasks),
         checked_submit),
        (f"Sync envelope, {n} job events ({len(envelope) >> 10} KiB)",
         lambda: [site_message_body(m) for m in pb.SiteEnvelope.FromString(envelope).messages], checked_envelope),
        (f"JSON, {n} jobs ({len(text_json) >> 10} KiB)", lambda: json.loads(text_json), checked_json),
        (f"YAML, {n // 10} jobs ({len(text_yaml) >> 10} KiB)", lambda: yaml.load(text_yaml, Loader=loader), checked_yaml),
    ]  # fmt: skip
    print(f"{'reader':<42} {'raw s':>9} {'checked s':>10} {'ratio':>6}   (median of {args.repeat})")
    for label, raw, checked in rows:
        raw_s, checked_s = median_s(raw, args.repeat), median_s(checked, args.repeat)
        print(f"{label:<42} {raw_s:>9.3f} {checked_s:>10.3f} {checked_s / raw_s:>6.2f}")


if __name__ == "__main__":
    main()
