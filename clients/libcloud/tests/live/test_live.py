"""The driver against a real cloud (``stratus-testcloud``: a controller, an agent, real guests
under libvirt on a network inside a namespace the cloud made), as a Libcloud user runs it:
both snippets of the StratusLab documentation as written, the whole node life-cycle with
Libcloud's own ``wait_until_running``, volumes hot-plugged into a guest, and ``deploy_node``
running a script over SSH (from inside the namespace) with Ed25519 and RSA keys."""

import subprocess
import time
from pathlib import Path

import pytest
from libcloud.compute.base import NodeAuthSSHKey
from libcloud.compute.deployment import ScriptDeployment
from libcloud.compute.types import NodeState

from stratuslab.libcloud.compute_driver import StratusLabNodeDriver
from testcloud import Relay, run_in_netns

BOOT = 180

# User data that finds (DISK-KEPT) or writes (DISK-MARKED) a mark at the end of the root disk.
MARK = (Path(__file__).resolve().parents[4] / "tests" / "guest" / "disk-mark.sh").read_text()


def wait_for(what, check, timeout=BOOT):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)


def console_lines(driver, node, needle):
    return [l for l in driver.ex_console(node).splitlines() if needle in l]


def test_the_first_snippet_of_the_documentation_runs_as_written(configured):
    # Load the driver.
    import stratuslab.libcloud.stratuslab_driver  # noqa: F401

    # Obtain an instance of the StratusLab driver.
    from libcloud.compute.types import Provider
    from libcloud.compute.providers import get_driver

    StratusLabDriver = get_driver(Provider.STRATUSLAB)
    driver = StratusLabDriver("default")

    # Get the first size, location, and image.
    size = driver.list_sizes().pop()
    location = driver.list_locations().pop()
    image = driver.list_images().pop()

    # Run a node through a single lifecycle.
    driver.list_nodes()
    node = driver.create_node(name="mynode", size=size, location=location, image=image)
    assert node.name == "mynode" and node.state == NodeState.PENDING
    assert [n.id for n in driver.list_nodes()] == [node.id]
    assert node.destroy()
    assert driver.list_nodes() == [] or driver.list_nodes()[0].state != NodeState.RUNNING
    wait_for("the node to go", lambda: driver.list_nodes() == [])


def test_the_second_snippet_registers_by_name(configured):
    from libcloud.compute.providers import DRIVERS, get_driver, set_driver

    set_driver("STRATUSLAB", "stratuslab.libcloud.compute_driver", "StratusLabNodeDriver")
    try:
        StratusLabDriver = get_driver("stratuslab")
        driver = StratusLabDriver("default")
        assert driver.list_nodes() == []
        assert {s.id for s in driver.list_sizes()} >= {"t1.micro", "m1.small"}
        assert [l.id for l in driver.list_locations()] == ["default"]
    finally:
        DRIVERS.pop("STRATUSLAB", None)


def test_a_node_reboots_stops_and_starts_with_its_disk_and_address(configured):
    driver = StratusLabNodeDriver("default")
    size = [s for s in driver.list_sizes() if s.id == "t1.micro"][0]
    image = [i for i in driver.list_images() if i.id == "appliance"][0]
    node = driver.create_node(name="life", size=size, image=image, ex_user_data=MARK)
    try:
        [(node, ips)] = driver.wait_until_running([node], wait_period=1, timeout=BOOT)
        assert ips == node.public_ips and ips
        marked = wait_for("the mark", lambda: console_lines(driver, node, "DISK-MARKED"))
        mark = marked[0].split()[-1]

        assert driver.reboot_node(node)
        kept = wait_for("the reboot", lambda: console_lines(driver, node, "DISK-KEPT"))
        assert kept[0].split()[-1] == mark
        [(node, _)] = driver.wait_until_running([node], wait_period=1, timeout=BOOT)

        assert driver.stop_node(node)
        stopped = wait_for(
            "Stopped",
            lambda: [n for n in driver.list_nodes() if n.id == node.id and n.state == NodeState.STOPPED],
        )[0]
        assert stopped.public_ips == ips, "a stopped node keeps its address"
        assert stopped.extra["host"] == node.extra["host"]

        assert driver.start_node(node)
        [(node, again)] = driver.wait_until_running([node], wait_period=1, timeout=BOOT)
        assert again == ips
        kept = wait_for("the second boot", lambda: console_lines(driver, node, "DISK-KEPT")[1:])
        assert kept[0].split()[-1] == mark
    finally:
        driver.destroy_node(node)


def test_volumes_are_created_attached_detached_and_destroyed(configured):
    driver = StratusLabNodeDriver("default")
    size = [s for s in driver.list_sizes() if s.id == "t1.micro"][0]
    image = [i for i in driver.list_images() if i.id == "appliance"][0]
    volume = driver.create_volume(1, "libcloud-data")
    node = driver.create_node(name="disks", size=size, image=image)
    try:
        wait_for(
            "the volume",
            lambda: [v for v in driver.list_volumes() if v.id == volume.id and v.state == "available"],
        )
        driver.wait_until_running([node], wait_period=1, timeout=BOOT)
        assert driver.attach_volume(node, volume)
        used = driver.ex_get_volume(volume.id)
        assert used.state == "inuse"
        [attachment] = used.extra["attachments"]
        assert attachment["instance"] == int(node.id) and attachment["state"] == "attached"
        assert driver.detach_volume(volume)
        assert driver.ex_get_volume(volume.id).extra["attachments"] == []
    finally:
        driver.destroy_node(node)
        wait_for("the node to go", lambda: all(n.id != node.id for n in driver.list_nodes()))
        assert driver.destroy_volume(volume)
    assert all(v.id != volume.id or v.state == "deleting" for v in driver.list_volumes())


@pytest.mark.parametrize("key_type", ["ed25519", "rsa"])
def test_deploy_node_runs_a_script_over_ssh(configured, cloud, tmp_path, key_type):
    key = tmp_path / f"id_{key_type}"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", key_type, "-N", "", "-f", str(key)], check=True
    )
    public = key.with_suffix(".pub").read_text()
    relay = Relay(cloud.netns, int(cloud.endpoint.rstrip("/").rsplit(":", 1)[1]))
    try:
        # The driver runs inside the cloud's network namespace, where the guests are: its
        # API calls go through the relay to the controller, its SSH straight to the guest.
        def deploy():
            driver = StratusLabNodeDriver("default", host="127.0.0.1", port=relay.port)
            size = [s for s in driver.list_sizes() if s.id == "t1.micro"][0]
            image = [i for i in driver.list_images() if i.id == "appliance"][0]
            script = ScriptDeployment("echo deployed-by-libcloud on $(hostname)")
            node = driver.deploy_node(
                name=f"deploy-{key_type}",
                size=size,
                image=image,
                deploy=script,
                auth=NodeAuthSSHKey(public),
                ssh_key=str(key),
                timeout=BOOT,
                wait_period=1,
            )
            return driver, node, script

        driver, node, script = run_in_netns(cloud.netns, deploy)
        assert script.exit_status == 0, script.stderr
        assert script.stdout.strip() == f"deployed-by-libcloud on deploy-{key_type}"
    finally:
        relay.close()
    StratusLabNodeDriver("default").destroy_node(node)
