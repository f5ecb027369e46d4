#!/usr/bin/env python3
"""Sign in to granulo through both steps and print the access token.

Accounts whose role requires a second factor (admin, medical_director) answer the password with
a challenge. The first time, this enrols: the TOTP secret is kept in STATE (a JSON file) with the
last step used, like an authenticator app, and later runs compute the code from it (RFC 6238,
SHA-1, 6 digits, 30 s; each step's code is accepted once, so a fourth sign-in within the same
step waits for the next). Standard library only.

    python3 scripts/mfa_login.py BASE USERNAME PASSWORD STATE
"""

import base64
import hashlib
import hmac
import json
import os
import struct
import sys
import time
import urllib.request


def post(base, path, body):
    req = urllib.request.Request(
        base + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=30) as res:
        return json.load(res)


def totp(secret_b32, step, digits=6):
    key = base64.b32decode(secret_b32 + "=" * (-len(secret_b32) % 8))
    mac = hmac.new(key, struct.pack(">Q", step), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    value = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10**digits).zfill(digits)


def next_code(state):
    while True:
        now = int(time.time())
        step = now // 30
        pick = max(state.get("last_step", -1) + 1, step - 1 if now % 30 < 20 else step)
        if pick <= step + 1:
            state["last_step"] = pick
            return totp(state["secret"], pick)
        time.sleep(0.5)


def login(base, username, password, state_path):
    first = post(base, "/api/v1/auth/login", {"username": username, "password": password})
    if not first.get("mfa_required"):
        return first["access_token"]
    state = {}
    if os.path.exists(state_path):
        with open(state_path) as f:
            state = json.load(f)
    challenge = first["challenge"]
    if first["enrolment_required"]:
        enrol = post(base, "/api/v1/auth/mfa/enrol", {"challenge": challenge})
        state = {"secret": enrol["secret"]}
        code = next_code(state)
        token = post(base, "/api/v1/auth/mfa/confirm", {"challenge": challenge, "code": code})["session"]["access_token"]
    else:
        code = next_code(state)
        token = post(base, "/api/v1/auth/login/mfa", {"challenge": challenge, "code": code})["access_token"]
    with open(os.open(state_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        json.dump(state, f)
    return token


if __name__ == "__main__":
    print(login(*sys.argv[1:5]))
