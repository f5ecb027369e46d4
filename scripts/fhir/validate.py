"""Validates FHIR R5 resources with fhir.resources, one JSON document per input line.

For each line it prints one line: `ok`, or `error: <what is wrong>`. A Bundle's entries and an
OperationOutcome are validated as the resources they are. Runs until stdin closes, so a test
process can keep one validator open.
"""

import json
import sys

from fhir.resources import get_fhir_model_class


def check(resource):
    kind = resource.get("resourceType")
    if not isinstance(kind, str):
        raise ValueError("no resourceType")
    get_fhir_model_class(kind).model_validate(resource)
    if kind == "Bundle":
        for i, entry in enumerate(resource.get("entry", [])):
            try:
                check(entry["resource"])
            except Exception as e:  # noqa: BLE001 - reported to the test
                raise ValueError(f"entry[{i}]: {e}") from e


def main():
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            check(json.loads(line))
            print("ok", flush=True)
        except Exception as e:  # noqa: BLE001 - reported to the test
            print("error: " + " ".join(str(e).split()), flush=True)


if __name__ == "__main__":
    main()
