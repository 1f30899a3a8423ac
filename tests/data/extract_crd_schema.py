"""Re-create the vendored KubeRay schemas from the operator's CRD files.

    python tests/data/extract_crd_schema.py ray.io_rayclusters.yaml \
        > tests/data/kuberay-raycluster-v1.schema.json

Takes the ``v1`` version's ``openAPIV3Schema`` of a CustomResourceDefinition and drops the
prose (``description``) to keep the file small; nothing else is changed.
"""

from __future__ import annotations

import json
import sys

import yaml


def strip_descriptions(node):
    if isinstance(node, dict):
        return {k: strip_descriptions(v) for k, v in node.items()
                if not (k == "description" and isinstance(v, str))}
    if isinstance(node, list):
        return [strip_descriptions(v) for v in node]
    return node


def main(path: str) -> None:
    with open(path) as f:
        crd = yaml.safe_load(f)
    v1 = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    print(json.dumps(strip_descriptions(v1["schema"]["openAPIV3Schema"]), sort_keys=True,
                     indent=None, separators=(",", ":")))


if __name__ == "__main__":
    main(sys.argv[1])
