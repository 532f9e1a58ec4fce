"""Keystone VLA: a vision-language-action control stack for industrial robot arms.

The root package holds what every part shares: the data contracts (`keystone_vla.types`), robot specs
(`keystone_vla.robots`), the safety shield and the `keystone` CLI. Subpackages map to the repository's
top-level folders: `sim`, `datasets`, `vla`, `perception`, `policies`, `ros_nodes`.
"""

__version__ = "0.1.0"
