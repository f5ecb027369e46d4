"""Reads a Prometheus text exposition on stdin and prints its samples as JSON lines
({"name", "labels", "value", "type"}), or exits non-zero when prometheus-client refuses it.
Used by tests/api/metrics.rs as a parser independent of the server's encoder."""
import json
import math
import sys

from prometheus_client.parser import text_string_to_metric_families


def main() -> None:
    text = sys.stdin.read()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            value = s.value
            if isinstance(value, float) and math.isinf(value):
                value = "+Inf" if value > 0 else "-Inf"
            print(json.dumps({"family": family.name, "type": family.type, "name": s.name,
                              "labels": s.labels, "value": value}))


if __name__ == "__main__":
    main()
