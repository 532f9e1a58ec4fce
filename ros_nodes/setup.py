"""colcon (ament_python) build of the `keystone_vla` ROS 2 package: node executables, launch and config files.

Only used by `colcon build` where ROS 2 is installed; the Python code is the pip package `keystone-vla`
(install it into the same Python first). Importing this module does nothing: setup() runs only as a script.
"""

import glob

PACKAGE = "keystone_vla"


def main() -> None:
    from setuptools import setup

    setup(
        name=PACKAGE,
        version="0.1.0",
        packages=[],
        data_files=[
            ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
            (f"share/{PACKAGE}", ["package.xml"]),
            (f"share/{PACKAGE}/launch", glob.glob("launch/*.launch.py")),
            (f"share/{PACKAGE}/config", glob.glob("config/*.yaml")),
        ],
        install_requires=["setuptools"],
        zip_safe=True,
        maintainer="Keystone VLA maintainers",
        description="Keystone VLA ROS 2 nodes (sim_bridge, perception, policy, safety, speech)",
        license="Apache-2.0",
        entry_points={"console_scripts": [
            f"{name} = keystone_vla.ros_nodes.runner:{name}_main"
            for name in ("sim_bridge", "perception", "policy", "safety", "speech")
        ]},
    )


if __name__ == "__main__":
    main()
