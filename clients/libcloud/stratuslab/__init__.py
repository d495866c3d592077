"""StratusLab clients for other ecosystems (the Libcloud driver is ``stratuslab.libcloud``)."""
