"""colcon / ament_python build of the molmo_edge_ros package (a system ROS 2 install).

Without a system ROS, `pip install "molmo-edge[ros]"` installs the same code as `molmo_edge.ros`.
"""
from glob import glob

from setuptools import setup

package_name = "molmo_edge_ros"

setup(
    name=package_name,
    version="0.1.0",
    packages=[package_name],
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml", "README.md"]),
        ("share/" + package_name + "/launch", glob("launch/*.launch.py")),
        ("share/" + package_name + "/config", glob("config/*.yaml")),
    ],
    # molmo-edge itself (the model runtime) comes from pip: `pip install molmo-edge`.
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="molmo-edge maintainers",
    maintainer_email="maintainers@molmo-edge.invalid",
    description="Molmo2 pointing and tracking on ROS 2 camera topics",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "tracker = molmo_edge_ros.main:main",
        ],
    },
)
