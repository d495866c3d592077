"""The StratusLab compute driver for Apache Libcloud.

``import stratuslab.libcloud.stratuslab_driver`` registers it as ``Provider.STRATUSLAB``;
``set_driver('STRATUSLAB', 'stratuslab.libcloud.compute_driver', 'StratusLabNodeDriver')``
does the same by hand. The driver reads the StratusLab command line client's configuration
file (``~/.stratuslab/stratuslab-user.cfg``), see :mod:`stratuslab.libcloud.config`.
"""
