"""The driver as Libcloud tests its drivers: Libcloud's ``MockHttp`` answering each request
with a fixture recorded from the real API (``fixtures/``, made by ``record_fixtures.py``),
Libcloud's ``TestCaseMixin`` for the common checks, and what each call sends and returns."""

import json
import os
import tempfile
import unittest
from pathlib import Path

from libcloud.common.types import InvalidCredsError
from libcloud.compute.base import NodeAuthSSHKey, NodeImage, NodeSize
from libcloud.compute.types import NodeState, StorageVolumeState
from libcloud.test import MockHttp
# Renamed so that pytest does not collect the mixin on its own.
from libcloud.test.compute import TestCaseMixin as LibcloudDriverChecks

from stratuslab.libcloud.compute_driver import StratusLabNodeDriver
from stratuslab.libcloud.connection import StratusLabError

FIXTURES = Path(__file__).parent / "fixtures"


def fixture(name):
    return (FIXTURES / name).read_text()


def recorded(name):
    return json.loads(fixture(name))


VOLUME = recorded("volume_create.json")["id"]
ENTRY = recorded("images.json")["marketplace"]["items"][0]["identifier"]
JSON = {"content-type": "application/json"}


class StratusLabMockHttp(MockHttp):
    """Answers by path, as Libcloud's mocks do; the volume's UUID and the Marketplace
    identifier recorded stand as VOLUME and ENTRY in the method names. Every request is kept
    (method, path, headers, body) for the tests to look at."""

    requests = []
    #: The base URL each request went to.
    hosts = []
    #: Answers of GET /volumes/VOLUME, in order (the last one repeats).
    volume_answers = []

    def _get_method_name(self, type, use_param, qs, path):
        # `type` picks an answer inside the handlers, not another handler.
        path = path.replace(VOLUME, "VOLUME").replace(ENTRY, "ENTRY")
        return super()._get_method_name(None, use_param, qs, path)

    def _get_request(self, method, url, body=None, headers=None):
        StratusLabMockHttp.requests.append((method, url, headers, body))
        StratusLabMockHttp.hosts.append(self.host)
        return super()._get_request(method, url, body, headers)

    def _answer(self, name, status=200):
        return (status, fixture(name), JSON, "")

    def _api_v1_types(self, method, url, body, headers):
        return self._answer("types.json")

    def _api_v1_images(self, method, url, body, headers):
        return self._answer("images.json")

    def _api_v1_images_ENTRY_policy(self, method, url, body, headers):
        return self._answer("policy_allowed.json")

    def _api_v1_instances(self, method, url, body, headers):
        if method == "POST":
            return self._answer("instance_create.json", 201)
        if self.type == "UNAUTHORIZED":
            return self._answer("error_unauthorized.json", 401)
        return self._answer("instances.json")

    def _api_v1_instances_1(self, method, url, body, headers):
        if method == "DELETE":
            return self._answer("instance_destroy.json")
        return self._answer("instance_stopped.json")

    def _api_v1_instances_1_reboot(self, method, url, body, headers):
        return self._answer("instance_reboot.json", 202)

    def _api_v1_instances_1_stop(self, method, url, body, headers):
        return self._answer("instance_stop.json", 202)

    def _api_v1_instances_1_start(self, method, url, body, headers):
        if self.type == "WRONG_STATE":
            return self._answer("error_wrong_state.json", 409)
        return self._answer("instance_start.json", 202)

    def _api_v1_instances_1_console(self, method, url, body, headers):
        return (200, fixture("console.txt"), {"content-type": "text/plain"}, "")

    def _api_v1_instances_1_volumes(self, method, url, body, headers):
        return self._answer("volume_attach.json", 202)

    def _api_v1_instances_1_volumes_VOLUME(self, method, url, body, headers):
        return self._answer("volume_detach.json", 202)

    def _api_v1_volumes(self, method, url, body, headers):
        if method == "POST":
            return self._answer("volume_create.json", 201)
        return self._answer("volumes.json")

    def _api_v1_volumes_VOLUME(self, method, url, body, headers):
        if method == "DELETE":
            return (204, "", {}, "")
        answers = StratusLabMockHttp.volume_answers
        return self._answer(answers.pop(0) if len(answers) > 1 else answers[0])


class StratusLabDriverTests(unittest.TestCase, LibcloudDriverChecks):
    should_list_locations = True
    should_list_volumes = True

    def setUp(self):
        self.home = tempfile.TemporaryDirectory()
        config = Path(self.home.name) / "user.cfg"
        config.write_text(
            "[default]\nendpoint = 127.0.0.1:8440\nusername = alice\npassword = pw\n"
            "ca_certificate = /site/ca.pem\n"
            "[other-cloud]\nendpoint = https://cloud.example.org\n"
        )
        self.environ = dict(os.environ)
        for variable in [v for v in os.environ if v.startswith("STRATUSLAB_")]:
            del os.environ[variable]
        os.environ["STRATUSLAB_CONFIG"] = str(config)
        os.environ["HOME"] = self.home.name
        StratusLabNodeDriver.connectionCls.conn_class = StratusLabMockHttp
        StratusLabMockHttp.type = None
        StratusLabMockHttp.requests = []
        StratusLabMockHttp.hosts = []
        StratusLabMockHttp.volume_answers = ["volume_attached.json"]
        self.driver = StratusLabNodeDriver("default")

    def tearDown(self):
        os.environ.clear()
        os.environ.update(self.environ)
        self.home.cleanup()

    def sent(self, method, path):
        """The body (parsed) and headers of the last request of `method` to `path`."""
        for m, url, headers, body in reversed(StratusLabMockHttp.requests):
            if m == method and url.split("?")[0].endswith(path):
                return (json.loads(body) if body else None), headers
        raise AssertionError(f"no {method} {path} in {StratusLabMockHttp.requests}")

    def test_https_to_the_endpoint_verified_with_the_configured_site_ca(self):
        self.driver.list_nodes()
        self.assertEqual(StratusLabMockHttp.hosts[-1], "https://127.0.0.1:8440")
        self.assertEqual(self.driver.connection.connection.ca_cert, "/site/ca.pem")

    def test_nodes_have_libcloud_states_and_their_addresses(self):
        [node] = self.driver.list_nodes()
        self.assertEqual(node.id, "1")
        self.assertEqual(node.name, "node-1")
        self.assertEqual(node.state, NodeState.RUNNING)
        self.assertEqual(node.public_ips, [node.extra["nics"][0]["ip"]])
        self.assertEqual(node.private_ips, [])
        self.assertEqual(node.extra["type"], "t1.micro")

    def test_a_stopped_node_is_stopped_and_keeps_its_address(self):
        node = self.driver.ex_get_node("1")
        self.assertEqual(node.state, NodeState.STOPPED)
        self.assertEqual(node.extra["state"], "Stopped")
        self.assertTrue(node.public_ips)

    def test_sizes_are_the_instance_types(self):
        sizes = {s.id: s for s in self.driver.list_sizes()}
        self.assertEqual(set(sizes), {"t1.micro", "m1.small", "c1.medium", "m1.large",
                                      "m1.xlarge", "c1.xlarge"})
        self.assertEqual((sizes["t1.micro"].ram, sizes["t1.micro"].extra["vcpus"]), (128, 1))

    def test_images_are_site_images_and_allowed_marketplace_entries(self):
        images = self.driver.list_images()
        self.assertEqual([i.extra["kind"] for i in images], ["site", "marketplace"])
        self.assertEqual(images[0].id, "appliance")
        self.assertEqual(images[1].id, ENTRY)
        self.assertEqual(images[1].extra["endorser"], "jane@example.org")
        self.sent("GET", f"/api/v1/images/{ENTRY}/policy")

    def test_locations_are_the_sections_of_the_configuration_file(self):
        self.assertEqual([l.id for l in self.driver.list_locations()], ["default", "other-cloud"])

    def test_create_node_sends_the_request_with_an_idempotency_key(self):
        node = self.driver.create_node(
            name="node-1",
            size=NodeSize("t1.micro", "t1.micro", 128, 1, None, None, self.driver),
            image=NodeImage("appliance", "appliance", self.driver),
            auth=NodeAuthSSHKey("ssh-ed25519 AAAAC3Nza me@host\n"),
            ex_network="public",
            ex_user_data="#!/bin/sh\necho hi\n",
            ex_persistent_disks=[VOLUME],
        )
        self.assertEqual((node.id, node.state), ("1", NodeState.PENDING))
        body, headers = self.sent("POST", "/api/v1/instances")
        self.assertEqual(
            body,
            {
                "image": "appliance",
                "type": "t1.micro",
                "name": "node-1",
                "ssh_key": "ssh-ed25519 AAAAC3Nza me@host",
                "network": "public",
                "user_data": "#!/bin/sh\necho hi\n",
                "persistent_disks": [VOLUME],
            },
        )
        self.assertEqual(len(headers["Idempotency-Key"]), 36)
        self.assertTrue(headers["Authorization"].startswith("Basic "))

    def test_reboot_stop_and_start_post_their_actions(self):
        node = self.driver.list_nodes()[0]
        self.assertTrue(self.driver.reboot_node(node))
        self.assertTrue(self.driver.stop_node(node))
        self.assertTrue(self.driver.start_node(node))
        paths = [url for m, url, _, _ in StratusLabMockHttp.requests if m == "POST"]
        self.assertEqual(" ".join(p.rsplit("/", 1)[1] for p in paths), "reboot stop start")

    def test_an_action_in_the_wrong_state_raises_the_clouds_message(self):
        StratusLabMockHttp.type = "WRONG_STATE"
        node = self.driver.list_nodes()[0]
        with self.assertRaises(StratusLabError) as raised:
            self.driver.start_node(node)
        self.assertEqual(raised.exception.http_code, 409)
        self.assertEqual(raised.exception.code, "wrong_state")
        self.assertEqual(
            str(raised.exception), "instance 1 is Running: only a Stopped instance can be started"
        )

    def test_bad_credentials_are_libclouds_invalid_creds(self):
        StratusLabMockHttp.type = "UNAUTHORIZED"
        with self.assertRaises(InvalidCredsError):
            self.driver.list_nodes()

    def test_the_console_is_text(self):
        text = self.driver.ex_console(self.driver.list_nodes()[0])
        self.assertIn("STRATUSLAB-APPLIANCE-READY", text)

    def test_volumes_are_created_listed_attached_detached_destroyed(self):
        [volume] = self.driver.list_volumes()
        self.assertEqual((volume.id, volume.size), (VOLUME, 1))
        self.assertEqual(volume.state, StorageVolumeState.AVAILABLE)
        created = self.driver.create_volume(1, "data", ex_public=True)
        self.assertEqual(created.name, "data")
        body, headers = self.sent("POST", "/api/v1/volumes")
        self.assertEqual(body, {"size": 1, "tag": "data", "public": True})
        self.assertIn("Idempotency-Key", headers)

        node = self.driver.list_nodes()[0]
        self.assertTrue(self.driver.attach_volume(node, volume))
        self.assertEqual(self.sent("POST", "/api/v1/instances/1/volumes")[0], {"volume": VOLUME})
        self.assertEqual(self.driver.ex_get_volume(VOLUME).state, StorageVolumeState.INUSE)

        # Attached, then released by the guest.
        StratusLabMockHttp.volume_answers = ["volume_attached.json", "volume_free.json"]
        self.assertTrue(self.driver.detach_volume(volume))
        self.sent("DELETE", f"/api/v1/instances/1/volumes/{VOLUME}")
        self.assertTrue(self.driver.destroy_volume(volume))
        self.sent("DELETE", f"/api/v1/volumes/{VOLUME}")

    def test_a_location_naming_another_section_runs_the_node_there(self):
        other = [l for l in self.driver.list_locations() if l.id == "other-cloud"][0]
        self.driver.create_node(
            name="far", size="t1.micro", image="appliance", location=other
        )
        self.assertEqual(StratusLabMockHttp.requests[-1][0], "POST")
        self.assertEqual(StratusLabMockHttp.hosts[-1], "https://cloud.example.org:8440")


class RegistrationTests(unittest.TestCase):
    def test_importing_the_module_registers_provider_stratuslab(self):
        import stratuslab.libcloud.stratuslab_driver  # noqa: F401
        from libcloud.compute.providers import get_driver
        from libcloud.compute.types import Provider

        self.assertIs(get_driver(Provider.STRATUSLAB), StratusLabNodeDriver)
        # Importing again changes nothing.
        stratuslab.libcloud.stratuslab_driver.register()
        self.assertIs(get_driver("stratuslab"), StratusLabNodeDriver)

    def test_set_driver_by_hand_as_the_documentation_does(self):
        from libcloud.compute.providers import DRIVERS, get_driver, set_driver

        set_driver("STRATUSLAB", "stratuslab.libcloud.compute_driver", "StratusLabNodeDriver")
        try:
            self.assertIs(get_driver("stratuslab"), StratusLabNodeDriver)
        finally:
            DRIVERS.pop("STRATUSLAB", None)


if __name__ == "__main__":
    unittest.main()
