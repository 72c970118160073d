#!/usr/bin/env python3
"""Push a file artifact with the oras Python SDK, pull it back, compare.

Run by e2e_auth.rs:

    ORAS_USER=... ORAS_PASSWORD=... python3 oras_roundtrip.py HOST:PORT REPO:TAG FILE OUTDIR

Logs in over plain HTTP (`insecure=True`), pushes FILE as the only layer of
REPO:TAG, then pulls REPO:TAG with a second, fresh client into OUTDIR.
Prints one JSON line: the push status and digest, the pulled files and
their sha256. Exits 0 only when the pulled file is byte for byte the pushed
one; 1 when they differ; 2 when a step raised (traceback on stderr).
"""

import hashlib
import json
import os
import sys
import time
import traceback
import types

import oras.client
import oras.decorator

# oras retries failed requests after 3, 5, 11, 29 and 83 s; a failure must
# show in seconds, so the retries stay but their pauses are capped.
_real_sleep = time.sleep
oras.decorator.time = types.SimpleNamespace(sleep=lambda seconds: _real_sleep(min(seconds, 0.2)))


def sha256_of(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def logged_in_client(registry, user, password, outdir):
    client = oras.client.OrasClient(hostname=registry, insecure=True)
    # Without the `docker` package (or daemon) oras records the login in a
    # docker config file; keep that file ours.
    client.login(
        username=user,
        password=password,
        hostname=registry,
        config_path=os.path.join(outdir, "docker-config.json"),
    )
    return client


def main():
    registry, reference, path, outdir = sys.argv[1:5]
    user = os.environ["ORAS_USER"]
    password = os.environ["ORAS_PASSWORD"]
    target = f"{registry}/{reference}"
    report = {"step": "push"}
    try:
        pusher = logged_in_client(registry, user, password, outdir)
        response = pusher.push(target=target, files=[path], disable_path_validation=True, quiet=True)
        report["push_status"] = response.status_code
        report["push_digest"] = response.headers.get("Docker-Content-Digest")
        if response.status_code != 201:
            report["push_body"] = response.text
            print(json.dumps(report))
            return 1

        report["step"] = "pull"
        pulldir = os.path.join(outdir, "pulled")
        os.makedirs(pulldir, exist_ok=True)
        puller = logged_in_client(registry, user, password, outdir)
        files = puller.pull(target=target, outdir=pulldir)
        report["pulled"] = [os.path.relpath(f, pulldir) for f in files]
        report["pulled_sha256"] = [sha256_of(f) for f in files]
    except Exception as err:  # report which step failed, and how
        traceback.print_exc()
        report["error"] = f"{type(err).__name__}: {err}"
        print(json.dumps(report))
        return 2
    report["step"] = "done"
    print(json.dumps(report))
    same = report["pulled_sha256"] == [sha256_of(path)]
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
