"""Scrapes a Prometheus text endpoint as a Prometheus client library reads it.

Usage: prom_scrape.py URL. Prints one JSON object: the Content-Type the server sent and, per
metric family, its type, its samples' values by name (the last of each name) and every sample
as [name, labels, value]. Exits non-zero when the body does not parse.
"""

import json
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def main() -> None:
    with urllib.request.urlopen(sys.argv[1], timeout=10) as r:
        content_type = r.headers.get("Content-Type", "")
        text = r.read().decode("utf-8")
    families = {}
    for family in text_string_to_metric_families(text):
        families[family.name] = {
            "type": family.type,
            "samples": {s.name: s.value for s in family.samples},
            "labelled": [[s.name, s.labels, s.value] for s in family.samples],
        }
    print(json.dumps({"content_type": content_type, "families": families}))


if __name__ == "__main__":
    main()
