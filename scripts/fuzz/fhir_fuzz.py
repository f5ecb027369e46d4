"""Fuzzes the FHIR R5 facade of a running granulo (scripts/fuzz/run starts it).

schemathesis covers /api/v1 from its OpenAPI document; FHIR has no such document, so this pass
drives /fhir/R5 directly: reads of made-up ids, searches with known and unknown parameters and
odd values, and creates and updates whose bodies are valid resources with parts replaced by
random JSON, with random conditional headers and media types. It signs in as staff and as a
hospital account. Every answer must hold to the facade's contract:

* no 5xx;
* an error is an OperationOutcome (application/fhir+json) whose first issue carries granulo's
  error code in details.coding;
* every resource answered, errors included, is valid R5 for fhir.resources.

Seeded and time-bounded: `--seed` and `--seconds`. Exits 1 naming each finding (at most 20
shown) with the request that caused it.
"""

import argparse
import json
import random
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from fhir.resources import get_fhir_model_class

EXT = "https://granulo.org/fhir/StructureDefinition/"
TYPES = [
    "Patient",
    "ServiceRequest",
    "Specimen",
    "BiologicallyDerivedProduct",
    "BiologicallyDerivedProductDispense",
    "Observation",
]
PARAMS = {
    "Patient": ["identifier"],
    "ServiceRequest": ["patient", "status", "identifier", "_lastUpdated"],
    "Specimen": [],
    "BiologicallyDerivedProduct": ["identifier", "product-status", "request", "expiration"],
    "BiologicallyDerivedProductDispense": ["patient", "based-on", "status"],
    "Observation": ["patient", "code", "based-on"],
}
COMMON = ["_count", "_cursor", "_format", "_summary", "_elements", "_sort", "_include", "name", "x"]


def call(base, method, path, token=None, body=None, headers=None):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(base + path, data=data, method=method)
    if token:
        req.add_header("Authorization", "Bearer " + token)
    if data is not None:
        req.add_header("Content-Type", "application/fhir+json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read()


def api(base, method, path, token=None, body=None):
    status, _, raw = call(base, method, path, token, body, {"Content-Type": "application/json"})
    return status, (json.loads(raw) if raw else None)


def valid(resource):
    get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    if resource["resourceType"] == "Bundle":
        for e in resource.get("entry", []):
            valid(e["resource"])


def check(findings, what, status, ctype, raw):
    def fail(why):
        findings.append(f"{what}: {why} (status {status}): {raw[:300]!r}")

    if status >= 500:
        return fail("server error")
    if status in (204, 304):
        return None
    try:
        body = json.loads(raw)
    except ValueError:
        return fail("not JSON")
    if not isinstance(body, dict) or "resourceType" not in body:
        return fail("not a resource")
    if not (ctype.startswith("application/fhir+json") or ctype.startswith("application/json")):
        return fail(f"content type {ctype}")
    if status >= 400:
        if body["resourceType"] != "OperationOutcome":
            return fail("an error that is not an OperationOutcome")
        try:
            code = body["issue"][0]["details"]["coding"][0]["code"]
        except (KeyError, IndexError, TypeError):
            return fail("an OperationOutcome without granulo's code")
        if not code:
            return fail("an empty error code")
    try:
        valid(body)
    except Exception as e:  # noqa: BLE001 - reported as a finding
        return fail("invalid R5: " + " ".join(str(e).split())[:300])
    return body


def junk(rng, depth=0):
    pick = rng.randrange(12 if depth < 2 else 8)
    if pick == 0:
        return None
    if pick == 1:
        return rng.choice([True, False])
    if pick == 2:
        return rng.choice([0, -1, 1, 2**31, 2**63, -(2**63) - 1, 10**30, 1.5, -0.0, 1e308])
    if pick == 3:
        return rng.choice(["", " ", "x" * 300, "\u00e9\u4e2d\U0001f600", "Patient/1", "#anc", "2026-13-45", "urn:x|y"])
    if pick == 4:
        return rng.choice(["2026-11-29", "2026-11-29T10:00:00Z", "2026-11-29T10:00:00+05:30", "1900-01-01", "9999-12-31T23:59:59Z"])
    if pick == 5:
        return rng.choice(["active", "revoked", "final", "order", "stat", "urgent", "female", "unknown", "62", "95"])
    if pick == 6:
        return "".join(chr(rng.randrange(32, 0x2FF)) for _ in range(rng.randrange(0, 20)))
    if pick == 7:
        return rng.randrange(-5, 100000)
    if pick in (8, 9):
        return [junk(rng, depth + 1) for _ in range(rng.randrange(0, 3))]
    return {rng.choice(["value", "code", "system", "reference", "url", "x", "valueQuantity", "start"]): junk(rng, depth + 1)
            for _ in range(rng.randrange(0, 3))}


def mutate(rng, value, depth=0):
    """The value with one random part replaced, dropped or added."""
    if isinstance(value, dict) and value and depth < 6 and rng.random() < 0.8:
        out = dict(value)
        key = rng.choice(list(out))
        action = rng.randrange(4)
        if action == 0:
            del out[key]
        elif action == 1:
            out[key] = junk(rng)
        elif action == 2:
            out[rng.choice(["doNotPerform", "modifierExtension", "implicitRules", "zz", key + "X"])] = junk(rng)
        else:
            out[key] = mutate(rng, out[key], depth + 1)
        return out
    if isinstance(value, list) and value and depth < 6 and rng.random() < 0.8:
        out = list(value)
        i = rng.randrange(len(out))
        out[i] = mutate(rng, out[i], depth + 1) if rng.random() < 0.7 else junk(rng)
        return out
    return junk(rng)


def param_value(rng, ids):
    return rng.choice([
        str(rng.choice(ids or [1])),
        f"Patient/{rng.choice(ids or [1])}",
        f"ServiceRequest/{rng.choice(ids or [1])}",
        "urn:x|y", "|y", "urn:x|", "http://loinc.org|882-1", "http://loinc.org|751-8",
        "ge2026-11-01", "lt2027", "gt2026-11-29T10:00:00Z", "ne2026-01-01", "2026-02-30", "eqx",
        "active,on-hold", "available", "unavailable", "issued", "allocated", "",
        "A999921123456", "=A99992112345600", "%00", "a" * 500, "-1", "0", "99999999999999999999",
    ])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--token", required=True, help="an admin access token")
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--seed", type=int, default=17674)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    base, admin = args.base, args.token

    # A hospital with an account of its own, and a patient registered through FHIR.
    code = f"FZ{rng.randrange(10**6)}"
    _, h = api(base, "POST", "/api/v1/hospitals", admin, {"name": "Fuzz General", "code": code})
    password = "fuzzing hospital password"
    api(base, "POST", "/api/v1/users", admin,
        {"username": f"fz-hosp-{code}".lower(), "password": password, "role": "hospital", "hospital_id": h["id"]})
    status, login = api(base, "POST", "/api/v1/auth/login", None, {"username": f"fz-hosp-{code}".lower(), "password": password})
    if status != 200:
        print(f"fhir fuzz: the hospital account could not sign in ({status}): {login}", file=sys.stderr)
        return 1
    hosp = login["access_token"]
    system = h["mrn_system"]
    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": system, "value": "FZ-1"}],
        "name": [{"family": "Fuzz", "given": ["Pat"]}],
        "gender": "female",
        "birthDate": "1984-05-06",
        "extension": [
            {"url": EXT + "body-weight", "valueQuantity": {"value": 61, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"}},
            {"url": EXT + "declared-abo-rhd", "valueCoding": {"system": "https://www.isbt128.org/uri/ABORhD", "code": "95"}},
        ],
    }
    status, _, raw = call(base, "POST", "/fhir/R5/Patient", hosp, patient)
    if status != 201:
        print(f"fhir fuzz: could not register the seed patient ({status}): {raw[:300]!r}", file=sys.stderr)
        return 1
    pid = json.loads(raw)["id"]
    seeds = {"Patient": patient}
    seeds.update(extra_seeds(pid))
    ids = [int(pid), 1, 2]

    findings = []
    statuses = {}
    n = 0
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        n += 1
        token = rng.choice([admin, hosp, hosp, None if rng.random() < 0.05 else admin])
        kind = rng.choice(TYPES + ["Medication", "metadata"])
        op = rng.randrange(10)
        headers = {}
        if rng.random() < 0.15:
            headers["Accept"] = rng.choice(["application/json", "application/fhir+xml", "*/*", "text/html", "application/fhir+json; fhirVersion=5.0"])
        if op <= 2:
            rid = rng.choice([str(rng.choice(ids)), "0", "-3", "x", "abo-rh-" + str(rng.choice(ids)), "xm-1", "anc-1", "9" * 25, "%20"])
            path = f"/fhir/R5/{kind}/{rid}"
            what = f"GET {path}"
            result = call(base, "GET", path, token, headers=headers)
        elif op <= 5:
            names = PARAMS.get(kind, []) + COMMON
            q = [(rng.choice(names), param_value(rng, ids)) for _ in range(rng.randrange(0, 4))]
            path = f"/fhir/R5/{kind}?" + urllib.parse.urlencode(q)
            what = f"GET {path}"
            result = call(base, "GET", path, token, headers=headers)
        elif op <= 8:
            seed = seeds.get(kind) or {"resourceType": kind}
            body = mutate(rng, seed) if rng.random() < 0.9 else seed
            if rng.random() < 0.2:
                headers["If-None-Exist"] = rng.choice(["identifier=" + system + "|FZ-1", "identifier=FZ-1", "name=x", "", "identifier=%7C", "?identifier=a,b"])
            raw_body = json.dumps(body).encode() if rng.random() < 0.95 else rng.choice([b"{", b"[]", b"null", b"\xff\xfe", b"{}" * 3])
            path = f"/fhir/R5/{kind}"
            what = f"POST {path} {raw_body[:200]!r} {headers}"
            result = call(base, "POST", path, token, raw_body, headers)
        else:
            kind = "ServiceRequest" if rng.random() < 0.8 else kind
            rid = rng.choice([str(rng.choice(ids)), "x"])
            body = mutate(rng, seeds.get("ServiceRequest") or {"resourceType": "ServiceRequest"})
            if rng.random() < 0.7:
                headers["If-Match"] = rng.choice(['W/"0"', "*", "", 'W/"' + "a" * 16 + '"'])
            path = f"/fhir/R5/{kind}/{rid}"
            what = f"PUT {path} {headers}"
            result = call(base, "PUT", path, token, body, headers)
        check(findings, what, *result)
        statuses[(what.split(" ", 1)[0], result[0])] = statuses.get((what.split(" ", 1)[0], result[0]), 0) + 1
    print(f"fhir fuzz: {n} requests in {args.seconds:.0f} s (seed {args.seed}), {len(findings)} findings")
    print("  answers: " + ", ".join(f"{m} {st}: {c}" for (m, st), c in sorted(statuses.items())))
    for f in findings[:20]:
        print("  " + f)
    return 1 if findings else 0


def extra_seeds(patient_id):
    """Valid bodies of the other resources, for the patient registered above."""
    soon = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 6 * 3600))
    return {
        "ServiceRequest": {
            "resourceType": "ServiceRequest",
            "identifier": [{"system": "urn:oid:1.2.3.4", "value": "FZ-ORDER"}],
            "status": "active",
            "intent": "order",
            "priority": "asap",
            "subject": {"reference": f"Patient/{patient_id}"},
            "occurrenceTiming": {"repeat": {"boundsPeriod": {"start": soon}, "count": 2,
                                            "frequency": 1, "period": 1, "periodUnit": "d"}},
            "quantityQuantity": {"value": 2},
            "reason": [{"concept": {"text": "invasive aspergillosis"}}],
            "contained": [{"resourceType": "Observation", "id": "anc", "status": "final",
                           "code": {"coding": [{"system": "http://loinc.org", "code": "751-8"}]},
                           "valueQuantity": {"value": 120, "system": "http://unitsofmeasure.org", "code": "/uL"}}],
            "supportingInfo": [{"reference": {"reference": "#anc"}}],
            "extension": [{"url": EXT + "refractory-hours",
                           "valueQuantity": {"value": 72, "system": "http://unitsofmeasure.org", "code": "h"}}],
            "orderDetail": [{"parameter": [
                {"code": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0508", "code": "IR"}]},
                 "valueBoolean": True}]}],
        },
        "Specimen": {
            "resourceType": "Specimen",
            "subject": {"reference": f"Patient/{patient_id}"},
            "collection": {"collectedDateTime": "2026-11-29T06:00:00Z"},
            "extension": [{"url": EXT + "recent-transfusion-or-pregnancy", "valueBoolean": True}],
        },
        "Observation": {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "751-8"}]},
            "subject": {"reference": f"Patient/{patient_id}"},
            "effectiveDateTime": "2026-11-29T06:00:00Z",
            "valueQuantity": {"value": 150, "unit": "/uL", "system": "http://unitsofmeasure.org", "code": "/uL"},
        },
    }


if __name__ == "__main__":
    sys.exit(main())
