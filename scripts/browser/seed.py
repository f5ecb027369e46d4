"""Seeds a fresh granulo through its HTTP API for the browser tests (scripts/browser/run).

The same flows as the Rust tests' helpers (tests/api/helpers.rs: `ready_unit`,
`release_tested`, `typed_patient`, `confirm_group`, `request_body`, `hospital`), with the
bootstrap admin's bearer token:

* a technologist (who signs in to the console) and a hospital with an account of its own;
* units not yet transfused, expiries spread over the next 24 h, at several statuses;
* patients with a confirmed group of record, a typed sample and open requests, one of them
  dedicated to the allocate-and-issue test: a CMV-negative patient and a released CMV-positive
  unit crossmatched compatible with her sample, so allocating it is an authorise-tier finding
  (`cmv_mismatch`, policy default `authorise`);
* a donor, a device and a collection booked for tomorrow.

Writes what the tests need (accounts, ids, DINs) as JSON to the path given.
"""

import argparse
import datetime as dt
import json
import os
import sys
import tempfile

import requests

PRODUCT = "E9999V00"
PASSWORD = "browser tests password"


def now_minute():
    return dt.datetime.now(dt.timezone.utc).replace(second=0, microsecond=0)


def ts(t):
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


class Api:
    def __init__(self, base):
        self.base = base
        self.http = requests.Session()
        self.http.headers["Connection"] = "close"

    def call(self, method, path, token=None, body=None, expect=(200, 201)):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        r = self.http.request(method, self.base + path, json=body, headers=headers, timeout=30)
        if r.status_code not in expect:
            raise SystemExit(f"seed: {method} {path} answered {r.status_code}: {r.text[:500]}")
        return r.json() if r.content else None

    def post(self, path, token, body):
        return self.call("POST", path, token, body)

    def get(self, path, token):
        return self.call("GET", path, token)

    def login(self, username, password):
        """Both sign-in steps (the admin's role requires a second factor): scripts/mfa_login.py
        enrols the first time and keeps the seed, per user, in a private temporary directory."""
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
        import mfa_login

        if not hasattr(self, "mfa_dir"):
            self.mfa_dir = tempfile.mkdtemp(prefix="granulo-browser-mfa-")
        return mfa_login.login(self.base, username, password, os.path.join(self.mfa_dir, f"{username}.json"))


class Seeder:
    def __init__(self, api, admin_user, admin_password):
        self.api = api
        self.admin = api.login(admin_user, admin_password)
        self.din_seq = 100
        self.markers = None

    def user(self, username, role, hospital_id=None):
        self.api.post(
            "/api/v1/users",
            self.admin,
            {"username": username, "password": PASSWORD, "role": role, "hospital_id": hospital_id},
        )
        return self.api.login(username, PASSWORD)

    def next_din(self):
        self.din_seq += 1
        return f"B123426{self.din_seq:06d}"

    def supplier_unit(self, tech, abo, rhd, cmv="negative", hours_ago=1.0, irradiate=True):
        """A supplier unit collected `hours_ago` (it expires 24 h after): (id, din, expires_at)."""
        collected = now_minute() - dt.timedelta(minutes=round(hours_ago * 60))
        body = {
            "source": {"type": "external", "supplier": "Regional centre", "din": self.next_din(),
                       "abo": abo, "rhd": rhd, "collected_at": ts(collected), "cmv": cmv},
            "product_code": PRODUCT, "volume_ml": 250, "granulocyte_count": 5e10,
        }
        unit = self.api.post("/api/v1/units", tech, body)
        if irradiate:
            self.api.post(f"/api/v1/units/{unit['id']}/irradiation", tech, {"dose_gy": 25})
        return unit["id"], unit["din"], unit["expires_at"]

    def release_tested(self, tech, unit):
        if self.markers is None:
            policy = self.api.get("/api/v1/policy", tech)
            self.markers = policy["unit"]["required_markers"]
        for marker in self.markers:
            self.api.post(f"/api/v1/units/{unit}/tests", tech, {"marker": marker, "result": "negative"})
        self.api.post(f"/api/v1/units/{unit}/release", tech, {"emergency": False})

    def ready_unit(self, tech, abo, rhd, cmv="negative", hours_ago=1.0):
        unit, din, expires = self.supplier_unit(tech, abo, rhd, cmv, hours_ago)
        self.release_tested(tech, unit)
        return unit, din, expires

    def confirm_group(self, staff, patient, abo, rhd):
        """Two samples drawn at different times typed the same: the group of record. Returns the
        newer sample."""
        last = None
        for hours in (3, 2):
            sample = self.api.post(
                f"/api/v1/patients/{patient}/samples", staff,
                {"drawn_at": ts(now_minute() - dt.timedelta(hours=hours)),
                 "transfused_or_pregnant_within_3_months": True},
            )
            last = sample["id"]
            self.api.post(f"/api/v1/samples/{last}/typing", staff, {"abo": abo, "rhd": rhd})
        return last

    def typed_patient(self, registrar, staff, mrn, given, family, abo, rhd, sex, cmv="negative"):
        body = {"mrn": mrn, "given_name": given, "family_name": family, "date_of_birth": "1990-02-03",
                "sex": sex, "weight_kg": 70, "abo": abo, "rhd": rhd, "cmv": cmv}
        patient = self.api.post("/api/v1/patients", registrar, body)["id"]
        sample = self.confirm_group(staff, patient, abo, rhd)
        return patient, sample

    def request(self, hosp, patient, units, priority, hours_ahead=6):
        body = {"patient_id": patient, "units_requested": units,
                "needed_by": ts(now_minute() + dt.timedelta(hours=hours_ahead)), "priority": priority,
                "indication": {"anc_per_ul": 120, "infection": "invasive aspergillosis", "refractory_hours": 72}}
        return self.api.post("/api/v1/requests", hosp, body)["id"]

    def crossmatch(self, tech, unit, sample):
        self.api.post("/api/v1/crossmatches", tech,
                      {"unit_id": unit, "sample_id": sample, "result": "compatible", "method": "iat"})


def seed(base, admin_user, admin_password):
    api = Api(base)
    s = Seeder(api, admin_user, admin_password)
    tech = s.user("browser-tech", "technologist")

    hospital = api.post("/api/v1/hospitals", s.admin, {"name": "St Elsewhere General", "code": "STE"})
    hosp = s.user("browser-hospital", "hospital", hospital["id"])

    # The board: units not yet transfused, first to expire every few hours, at several statuses.
    board = []
    for abo, rhd, cmv, hours_ago, state in [
        ("O", "negative", "negative", 22.5, "available"),
        ("A", "positive", "negative", 20.0, "available"),
        ("B", "positive", "positive", 17.0, "quarantined"),
        ("O", "positive", "negative", 13.5, "available"),
        ("AB", "positive", "negative", 9.0, "available"),
        ("A", "negative", "negative", 5.0, "quarantined"),
        ("O", "negative", "negative", 2.0, "available"),
        ("A", "positive", "negative", 1.0, "allocated"),
    ]:
        if state == "quarantined":
            unit, din, expires = s.supplier_unit(tech, abo, rhd, cmv, hours_ago, irradiate=abo != "B")
        else:
            unit, din, expires = s.ready_unit(tech, abo, rhd, cmv, hours_ago)
        board.append({"id": unit, "din": din, "expires_at": expires, "state": state, "group": f"{abo} {rhd}"})

    # A routine request for an A-positive patient, holding the last unit above.
    routine_patient, _ = s.typed_patient(hosp, tech, "STE-1002", "Amira", "Haddad", "A", "positive", "female")
    routine = s.request(hosp, routine_patient, 3, "routine", hours_ahead=10)
    allocated = next(u for u in board if u["state"] == "allocated")
    api.post(f"/api/v1/requests/{routine}/allocations", tech, {"unit_id": allocated["id"]})

    # Another open request, stat, with nothing allocated yet.
    stat_patient, _ = s.typed_patient(hosp, tech, "STE-1003", "Tomasz", "Nowak", "B", "positive", "male")
    stat = s.request(hosp, stat_patient, 1, "stat", hours_ahead=3)

    # The allocate-and-issue test's request: a CMV-negative, O-negative patient (male, so the
    # only finding is cmv_mismatch) and a released CMV-positive O-negative unit crossmatched
    # compatible with his sample.
    auth_patient, auth_sample = s.typed_patient(hosp, tech, "STE-1001", "Daniel", "Okoro", "O", "negative", "male")
    auth_request = s.request(hosp, auth_patient, 1, "asap", hours_ahead=6)
    cmv_unit, cmv_din, cmv_expires = s.ready_unit(tech, "O", "negative", "positive", hours_ago=1.5)
    s.crossmatch(tech, cmv_unit, auth_sample)
    board.append({"id": cmv_unit, "din": cmv_din, "expires_at": cmv_expires, "state": "available",
                  "group": "O negative"})

    # Today: a donor and a device with a collection booked for tomorrow morning.
    donor = api.post("/api/v1/donors", tech, {
        "given_name": "Priya", "family_name": "Raman", "date_of_birth": "1985-04-12", "sex": "female",
        "weight_kg": 68.5, "abo": "O", "rhd": "negative", "cmv": "negative",
        "hla": {"a": ["A*02:01", "A*01"], "b": ["B*07"]}, "donor_type": "community",
        "phone": "+44 20 7946 0000", "email": "donor@example.org"})["id"]
    device = api.post("/api/v1/devices", tech, {"name": "Spectra Optia 1"})["id"]
    tomorrow = (now_minute() + dt.timedelta(days=1)).replace(hour=8, minute=0)
    api.post("/api/v1/collections", tech,
             {"donor_id": donor, "device_id": device, "scheduled_start": ts(tomorrow)})

    return {
        "tech": {"username": "browser-tech", "password": PASSWORD},
        "hospital": {"username": "browser-hospital", "password": PASSWORD, "id": hospital["id"]},
        "units": board,
        "requests": {"routine": routine, "stat": stat, "authorise": auth_request},
        "authorise": {"request": auth_request, "patient": auth_patient, "unit": cmv_unit, "din": cmv_din,
                      "wrong_din": board[0]["din"]},
        "din_seq": s.din_seq,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--admin-user", required=True)
    ap.add_argument("--admin-password", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    data = seed(args.base, args.admin_user, args.admin_password)
    with open(args.out, "w") as f:
        json.dump(data, f, indent=2)
    print(f"seed: {len(data['units'])} units, {len(data['requests'])} requests", file=sys.stderr)


if __name__ == "__main__":
    main()
