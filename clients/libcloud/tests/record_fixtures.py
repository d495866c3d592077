"""Records the unit tests' fixtures from a real cloud: starts ``stratus-testcloud``, makes the
requests the driver makes (as its user, through a whole instance and volume life) and writes
each answer into ``fixtures/`` as the controller gave it (IDs, times and addresses included).
Run as root after ``cargo build --workspace --bins``:

    build/libcloud-venv/bin/python clients/libcloud/tests/record_fixtures.py
"""

import base64
import json
import ssl
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from testcloud import LiveCloud  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"


class Recorder:
    def __init__(self, cloud):
        self.base = f"{cloud.endpoint}/api/v1"
        self.tls = ssl.create_default_context(cafile=cloud.ca_certificate)
        self.user, self.password = cloud.username, cloud.password

    def call(self, method, path, body=None, password=None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method)
        secret = f"{self.user}:{password or self.password}".encode()
        request.add_header("Authorization", "Basic " + base64.b64encode(secret).decode())
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=60, context=self.tls) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def save(self, name, method, path, body=None, password=None, expect=None):
        status, text = self.call(method, path, body, password)
        if expect is not None and status != expect:
            raise RuntimeError(f"{method} {path}: {status} {text}")
        if text and name.endswith(".json"):
            text = json.dumps(json.loads(text), indent=2) + "\n"
        (FIXTURES / name).write_text(text)
        print(f"{name}: {method} {path} -> {status}")
        return json.loads(text) if text and name.endswith(".json") else text

    def wait(self, path, done, what):
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            status, text = self.call("GET", path)
            if status == 200 and done(json.loads(text)):
                return
            time.sleep(0.2)
        raise RuntimeError(f"timed out waiting for {what}")


def main():
    FIXTURES.mkdir(exist_ok=True)
    cloud = LiveCloud()
    try:
        r = Recorder(cloud)
        r.save("types.json", "GET", "/types", expect=200)
        r.save("images.json", "GET", "/images?limit=100", expect=200)
        r.save("policy_unknown.json", "GET", "/images/GOaxJFdoEXvqAm9ArJgnZO_ky6F/policy")
        r.save(
            "policy_allowed.json",
            "GET",
            f"/images/{cloud.marketplace_image}/policy",
            expect=200,
        )
        r.save("error_unauthorized.json", "GET", "/instances", password="wrong", expect=401)
        created = r.save(
            "instance_create.json",
            "POST",
            "/instances",
            {"image": "appliance", "type": "t1.micro", "name": "node-1"},
            expect=201,
        )
        path = f"/instances/{created['id']}"
        running = lambda i: i["state"] == "Running"  # noqa: E731
        r.wait(path, running, "Running")
        r.save("instances.json", "GET", "/instances", expect=200)
        r.save("error_wrong_state.json", "POST", path + "/start", expect=409)
        r.save("instance_reboot.json", "POST", path + "/reboot", expect=202)
        r.wait(path, running, "Running after the reboot")
        r.save("instance_stop.json", "POST", path + "/stop", expect=202)
        r.wait(path, lambda i: i["state"] == "Stopped", "Stopped")
        r.save("instance_stopped.json", "GET", path, expect=200)
        r.save("instance_start.json", "POST", path + "/start", expect=202)
        r.wait(path, running, "Running after the start")
        volume = r.save(
            "volume_create.json", "POST", "/volumes", {"size": 1, "tag": "data"}, expect=201
        )
        vpath = f"/volumes/{volume['id']}"
        r.wait(vpath, lambda v: v["state"] == "available", "the volume")
        r.save("volumes.json", "GET", "/volumes", expect=200)
        r.save("volume_attach.json", "POST", path + "/volumes", {"volume": volume["id"]}, expect=202)
        r.wait(vpath, lambda v: any(a["state"] == "attached" for a in v["attachments"]), "attach")
        r.save("volume_attached.json", "GET", vpath, expect=200)
        r.save("volume_detach.json", "DELETE", f"{path}/volumes/{volume['id']}", expect=202)
        r.wait(vpath, lambda v: not v["attachments"], "detach")
        r.save("volume_free.json", "GET", vpath, expect=200)
        r.save("console.txt", "GET", path + "/console", expect=200)
        r.save("volume_delete.json", "DELETE", vpath, expect=204)
        r.save("instance_destroy.json", "DELETE", path, expect=200)
    finally:
        cloud.close()


if __name__ == "__main__":
    main()
