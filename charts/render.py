#!/usr/bin/env python3
"""Renders the chart with Helm's engine (helm-python-sdk) and prints every
object as one JSON array, for `make e2e`, which installs what it prints.

    charts/render.py [--namespace NS] [--values JSON]
"""

import argparse
import json
from pathlib import Path

import yaml
from helm_python import Chart

CHART = Path(__file__).resolve().parent / "foodapp-operator"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--namespace", default="foodapp-system")
    parser.add_argument("--release", default="foodapp")
    parser.add_argument("--values", default="{}", help="values as a JSON object")
    args = parser.parse_args()
    chart = Chart.load(CHART)
    values = json.loads(args.values)
    chart.validate_schema(values)
    manifests = chart.render(values, name=args.release, namespace=args.namespace, is_install=True)
    objects = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        objects += [o for o in yaml.safe_load_all(text) if o]
    print(json.dumps(objects))


if __name__ == "__main__":
    main()
