"""Reads a Prometheus text exposition on stdin with the official parser (python3-prometheus-
client) and prints one line per sample, `name{label=value,...} value`, labels sorted, so a
shell test can grep and compare. Exits non-zero if the text does not parse."""

import sys

from prometheus_client.parser import text_string_to_metric_families


def main():
    text = sys.stdin.read()
    count = 0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            print(f"{s.name}{{{labels}}} {s.value:.6f}")
            count += 1
    if count == 0:
        sys.exit("no samples")


if __name__ == "__main__":
    main()
