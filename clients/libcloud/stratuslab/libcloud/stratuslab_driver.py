"""Importing this module registers the StratusLab driver with Libcloud as
``Provider.STRATUSLAB`` (``'stratuslab'``), as the original StratusLab driver did:

    import stratuslab.libcloud.stratuslab_driver
    from libcloud.compute.types import Provider
    from libcloud.compute.providers import get_driver
    StratusLabDriver = get_driver(Provider.STRATUSLAB)
    driver = StratusLabDriver('default')
"""

from libcloud.compute.providers import DRIVERS, set_driver
from libcloud.compute.types import Provider

from .compute_driver import StratusLabNodeDriver

PROVIDER = "stratuslab"


def register():
    """Registers the driver (once, whatever name case an earlier registration used)."""
    if not hasattr(Provider, "STRATUSLAB"):
        Provider.STRATUSLAB = PROVIDER
    if not any(str(name).lower() == PROVIDER for name in DRIVERS):
        set_driver(Provider.STRATUSLAB, __name__.rsplit(".", 1)[0] + ".compute_driver",
                   "StratusLabNodeDriver")


register()

__all__ = ["StratusLabNodeDriver", "PROVIDER", "register"]
