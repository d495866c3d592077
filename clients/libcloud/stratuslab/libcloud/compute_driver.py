"""The StratusLab compute driver for Apache Libcloud: instances as nodes (with the whole
life-cycle: create, reboot, stop, start, destroy, and ``deploy_node`` over SSH), instance types
as sizes, site images and the Marketplace entries the site policy allows as images, the
sections of the user's configuration file as locations, and persistent disks as volumes.

``StratusLabNodeDriver('default')`` takes a section of ``~/.stratuslab/stratuslab-user.cfg``
(see :mod:`stratuslab.libcloud.config`); ``None`` picks the section as the command line
client does. Every call goes to ``/api/v1`` of the section's endpoint, with its username and
password.
"""

import time
import uuid

from libcloud.compute.base import (
    Node,
    NodeAuthPassword,
    NodeAuthSSHKey,
    NodeDriver,
    NodeImage,
    NodeLocation,
    NodeSize,
    StorageVolume,
)
from libcloud.compute.types import NodeState, StorageVolumeState

from . import config
from .connection import StratusLabConnection, StratusLabError

#: Our instance states as Libcloud's node states.
NODE_STATES = {
    "Pending": NodeState.PENDING,
    "Booting": NodeState.STARTING,
    "Running": NodeState.RUNNING,
    "Stopping": NodeState.PENDING,
    "Done": NodeState.TERMINATED,
    "Failed": NodeState.ERROR,
    "Stopped": NodeState.STOPPED,
    "PoweringOff": NodeState.STOPPING,
    "Starting": NodeState.STARTING,
    "Rebooting": NodeState.REBOOTING,
    "Unknown": NodeState.UNKNOWN,
}

#: Our volume states (and an attached volume's) as Libcloud's.
VOLUME_STATES = {
    "creating": StorageVolumeState.CREATING,
    "available": StorageVolumeState.AVAILABLE,
    "failed": StorageVolumeState.ERROR,
    "deleting": StorageVolumeState.DELETING,
}

#: How long attach_volume and detach_volume wait for the guest by default, in seconds.
VOLUME_WAIT = 120


def is_private_network(name):
    """Addresses on a site network named ``private`` (or ``private-...``) are private ones;
    every other network's are public (what users connect to)."""
    return name == "private" or name.startswith("private-") or name.startswith("private_")


class StratusLabNodeDriver(NodeDriver):
    """Libcloud's compute API on a StratusLab cloud."""

    type = "stratuslab"
    name = "StratusLab"
    website = "http://stratuslab.eu/"
    connectionCls = StratusLabConnection
    # An SSH key given as NodeAuthSSHKey goes to the guest, so deploy_node can log in with it.
    features = {"create_node": ["ssh_key"]}

    def __init__(self, key="default", secret=None, secure=None, host=None, port=None, **kwargs):
        """`key` is the configuration file's section (``default`` for ``[default]`` alone,
        ``None`` for the section the command line client would pick). `secret`, `host`,
        `port` and `secure` override the configured password and endpoint."""
        self.user_config = config.load(key if key else None)
        endpoint = self.user_config.endpoints[0]
        self.section = self.user_config.section or config.DEFAULT_SECTION
        username = self.user_config.username or ""
        password = secret if secret is not None else (self.user_config.password or "")
        super().__init__(
            key=username,
            secret=password,
            secure=endpoint.secure if secure is None else secure,
            host=host or endpoint.host,
            port=port or endpoint.port,
            **kwargs,
        )
        self.connection.request_path = endpoint.path

    def _ex_connection_class_kwargs(self):
        return {"ca_certificate": self.user_config.ca_certificate}

    # ---- sizes, locations, images ---------------------------------------------------------

    def list_sizes(self, location=None):
        return [self._to_size(t) for t in self.connection.api("/types").object]

    def _to_size(self, t):
        return NodeSize(
            id=t["name"],
            name=t["name"],
            ram=t["memory_mib"],
            disk=t["disk_gib"],
            bandwidth=None,
            price=None,
            driver=self,
            extra={"vcpus": t["vcpus"]},
        )

    def list_locations(self):
        """The sections of the configuration file: each names a cloud (or an account)."""
        return [
            NodeLocation(id=name, name=name, country="", driver=self)
            for name in config.sections() or [self.section]
        ]

    def list_images(self, location=None, ex_os=None, ex_limit=100):
        """The site's images, then the Marketplace's latest entries that the site policy
        allows to run here (``ex_os`` filters them by operating system)."""
        params = {"limit": ex_limit}
        if ex_os:
            params["os"] = ex_os
        listing = self.connection.api("/images", params=params).object
        images = [self._site_image(i) for i in listing["site"]]
        allowed = {}
        for entry in listing["marketplace"]["items"]:
            identifier = entry["identifier"]
            if identifier not in allowed:
                verdict = self.connection.api(f"/images/{identifier}/policy").object
                allowed[identifier] = verdict["allowed"]
                if verdict["allowed"]:
                    images.append(self._marketplace_image(verdict.get("entry") or entry))
        return images

    def _site_image(self, image):
        return NodeImage(
            id=image["name"],
            name=image["name"],
            driver=self,
            extra={
                "kind": "site",
                "format": image["format"],
                "sha256": image["disk"]["sha256"],
                "owner": image["owner"],
                "created": image["created"],
            },
        )

    def _marketplace_image(self, entry):
        meta = entry["metadata"]
        return NodeImage(
            id=entry["identifier"],
            name=f"{meta.get('os', '')} {meta.get('os_version', '')} {meta.get('version', '')}".strip()
            or entry["identifier"],
            driver=self,
            extra={
                "kind": "marketplace",
                "os": meta.get("os"),
                "os_version": meta.get("os_version"),
                "arch": meta.get("arch"),
                "version": meta.get("version"),
                "description": meta.get("description"),
                "endorser": entry["endorser_email"],
                "created": meta.get("created"),
                "valid_until": meta.get("valid_until"),
            },
        )

    # ---- nodes ----------------------------------------------------------------------------

    def list_nodes(self, ex_all=False):
        """The instances you may see that are not Done (with ``ex_all``, those too)."""
        instances = self.connection.api("/instances").object
        return [
            self._to_node(i) for i in instances if ex_all or i["state"] != "Done"
        ]

    def ex_get_node(self, node_id):
        """One instance, by ID."""
        return self._to_node(self.connection.api(f"/instances/{node_id}").object)

    def _to_node(self, instance):
        public, private = [], []
        for nic in instance.get("nics", []):
            (private if is_private_network(nic["network"]) else public).append(nic["ip"])
        return Node(
            id=str(instance["id"]),
            name=instance["name"],
            state=NODE_STATES.get(instance["state"], NodeState.UNKNOWN),
            public_ips=public,
            private_ips=private,
            driver=self,
            size=None,
            image=None,
            extra={
                "state": instance["state"],
                "reason": instance.get("reason"),
                "owner": instance["owner"],
                "image": instance["image"],
                "type": instance["type"],
                "vcpus": instance["vcpus"],
                "memory_mib": instance["memory_mib"],
                "host": instance.get("host"),
                "domain": instance["domain"],
                "created": instance["created"],
                "cpu_percent": instance.get("cpu_percent"),
                "disks": instance.get("disks", []),
                "nics": instance.get("nics", []),
            },
        )

    def create_node(
        self,
        name,
        size,
        image,
        location=None,
        auth=None,
        ex_network=None,
        ex_ssh_key=None,
        ex_user_data=None,
        ex_persistent_disks=None,
    ):
        """Runs an instance of `image` (a site image name or a Marketplace identifier) with
        the type `size`. The guest gets the SSH public key of `auth` (a ``NodeAuthSSHKey``),
        else ``ex_ssh_key`` (the key's text), else the configured ``user_public_key_file``
        when it exists. ``ex_network`` names a site network (``public`` by default when the
        site has one), ``ex_user_data`` is handed to the guest (cloud-init), and
        ``ex_persistent_disks`` are volumes (or their UUIDs) attached at start. A `location`
        naming another section of the configuration file runs the node on that cloud."""
        if location is not None and location.id != self.section:
            return StratusLabNodeDriver(location.id).create_node(
                name,
                size,
                image,
                auth=auth,
                ex_network=ex_network,
                ex_ssh_key=ex_ssh_key,
                ex_user_data=ex_user_data,
                ex_persistent_disks=ex_persistent_disks,
            )
        if isinstance(auth, NodeAuthPassword):
            raise NotImplementedError("StratusLab guests take an SSH key, not a password")
        request = {
            "image": image.id if isinstance(image, NodeImage) else str(image),
            "type": size.id if isinstance(size, NodeSize) else str(size),
            "name": name,
        }
        key = auth.pubkey if isinstance(auth, NodeAuthSSHKey) else ex_ssh_key
        if key is None:
            key = self._configured_public_key()
        if key:
            request["ssh_key"] = key.strip()
        if ex_network:
            request["network"] = ex_network
        if ex_user_data is not None:
            request["user_data"] = ex_user_data
        if ex_persistent_disks:
            request["persistent_disks"] = [
                v.id if isinstance(v, StorageVolume) else str(v) for v in ex_persistent_disks
            ]
        # A retry of this very request (say, after a timeout) makes no second instance.
        headers = {"Idempotency-Key": str(uuid.uuid4())}
        instance = self.connection.api(
            "/instances", method="POST", body=request, headers=headers
        ).object
        return self._to_node(instance)

    def _configured_public_key(self):
        path = self.user_config.public_key_file
        if not path:
            return None
        try:
            with open(path, encoding="utf-8") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def destroy_node(self, node):
        self.connection.api(f"/instances/{node.id}", method="DELETE")
        return True

    def reboot_node(self, node):
        """Restarts a Running instance's guest (an ACPI request, the power cut after the
        host's timeout, then a boot from the same disk)."""
        return self._power(node, "reboot")

    def stop_node(self, node):
        """Powers the instance off; it keeps its host, disk, addresses and volumes."""
        return self._power(node, "stop")

    def start_node(self, node):
        """Boots a Stopped instance again, on its host, from its disk."""
        return self._power(node, "start")

    def _power(self, node, action):
        self.connection.api(f"/instances/{node.id}/{action}", method="POST")
        return True

    def ex_console(self, node):
        """The instance's serial console output (the last 256 KiB), as text."""
        body = self.connection.api(f"/instances/{node.id}/console").body
        return body if isinstance(body, str) else body.decode("utf-8", "replace")

    # ---- volumes --------------------------------------------------------------------------

    def list_volumes(self):
        """Your persistent disks and everyone's public ones."""
        return [self._to_volume(v) for v in self.connection.api("/volumes").object]

    def _to_volume(self, volume):
        state = VOLUME_STATES.get(volume["state"], StorageVolumeState.UNKNOWN)
        if state == StorageVolumeState.AVAILABLE and volume["attachments"]:
            state = StorageVolumeState.INUSE
        return StorageVolume(
            id=volume["id"],
            name=volume.get("tag") or volume["id"],
            size=volume["size"],
            driver=self,
            state=state,
            extra={
                "owner": volume["owner"],
                "tag": volume.get("tag", ""),
                "visibility": volume["visibility"],
                "type": volume["type"],
                "serial": volume["serial"],
                "host": volume["host"],
                "created": volume["created"],
                "reason": volume.get("reason"),
                "attachments": volume["attachments"],
            },
        )

    def ex_get_volume(self, volume_id):
        return self._to_volume(self.connection.api(f"/volumes/{volume_id}").object)

    def create_volume(
        self, size, name, location=None, snapshot=None, ex_public=False, ex_type=None
    ):
        """A persistent disk of `size` GiB tagged `name` (private unless ``ex_public``;
        ``ex_type`` ``data-rw``, the default, or ``data-ro``)."""
        request = {"size": size, "tag": name, "public": bool(ex_public)}
        if ex_type:
            request["type"] = ex_type
        headers = {"Idempotency-Key": str(uuid.uuid4())}
        volume = self.connection.api(
            "/volumes", method="POST", body=request, headers=headers
        ).object
        return self._to_volume(volume)

    def destroy_volume(self, volume):
        self.connection.api(f"/volumes/{volume.id}", method="DELETE")
        return True

    def attach_volume(self, node, volume, device=None, ex_timeout=VOLUME_WAIT):
        """Hot-plugs the volume into the Running node and waits until the guest has it (the
        cloud chooses the device: see ``volume.extra['attachments']``)."""
        self.connection.api(
            f"/instances/{node.id}/volumes", method="POST", body={"volume": volume.id}
        )
        self._wait_volume(
            volume.id,
            lambda v: any(
                a["instance"] == int(node.id) and a["state"] == "attached"
                for a in v["attachments"]
            ),
            f"volume {volume.id} was not attached to node {node.id}",
            ex_timeout,
        )
        return True

    def detach_volume(self, volume, ex_node=None, ex_timeout=VOLUME_WAIT):
        """Unplugs the volume from the node using it (``ex_node`` when several share a
        read-only one) and waits until the guest released it."""
        attachments = self.connection.api(f"/volumes/{volume.id}").object["attachments"]
        if ex_node is not None:
            instance = int(ex_node.id)
        elif len(attachments) == 1:
            instance = attachments[0]["instance"]
        elif not attachments:
            raise StratusLabError(f"volume {volume.id} is not attached", 409, "conflict", self)
        else:
            raise ValueError(f"volume {volume.id} is used by several nodes: name one (ex_node)")
        self.connection.api(f"/instances/{instance}/volumes/{volume.id}", method="DELETE")
        self._wait_volume(
            volume.id,
            lambda v: all(a["instance"] != instance for a in v["attachments"]),
            f"node {instance} did not release volume {volume.id}",
            ex_timeout,
        )
        return True

    def _wait_volume(self, volume_id, done, message, timeout):
        deadline = time.monotonic() + timeout
        while True:
            volume = self.connection.api(f"/volumes/{volume_id}").object
            if done(volume):
                return volume
            if volume.get("reason") and not volume["attachments"]:
                raise StratusLabError(f"{message}: {volume['reason']}", 409, "conflict", self)
            if time.monotonic() > deadline:
                raise StratusLabError(f"{message} within {timeout} s", 504, "timeout", self)
            time.sleep(0.25)
