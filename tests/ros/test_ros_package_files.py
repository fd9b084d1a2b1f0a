"""The colcon package files agree with each other and with the Python package."""
from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path

ROS2_NODES = Path(__file__).resolve().parents[2] / "ros2_nodes"


def test_package_xml_is_format_3_ament_python_with_the_message_dependencies():
    root = ET.parse(ROS2_NODES / "package.xml").getroot()
    assert root.tag == "package" and root.get("format") == "3"
    assert root.findtext("name") == "molmo_edge_ros"
    assert root.find("export").findtext("build_type") == "ament_python"
    exec_depends = {e.text: e.get("condition") for e in root.findall("exec_depend")}
    for dep in ("rclpy", "sensor_msgs", "std_msgs", "visualization_msgs", "diagnostic_msgs", "lifecycle_msgs"):
        assert dep in exec_depends and exec_depends[dep] is None
    assert exec_depends["vision_msgs"] is not None  # optional: behind a condition


def test_setup_py_installs_the_node_launch_config_and_marker():
    tree = ast.parse((ROS2_NODES / "setup.py").read_text())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    kwargs = {k.arg: k.value for k in call.keywords}
    scripts = ast.literal_eval(kwargs["entry_points"])["console_scripts"]
    assert scripts == ["tracker = molmo_edge_ros.main:main"]
    source = ast.unparse(kwargs["data_files"])
    for needle in ("resource_index/packages", "package.xml", "launch/*.launch.py", "config/*.yaml"):
        assert needle in source
    assert (ROS2_NODES / "resource" / "molmo_edge_ros").is_file()
    cfg = (ROS2_NODES / "setup.cfg").read_text()
    assert "script_dir=$base/lib/molmo_edge_ros" in cfg and "install_scripts=$base/lib/molmo_edge_ros" in cfg


def test_launch_file_is_valid_python_and_starts_the_tracker_lifecycle_node():
    launch = ROS2_NODES / "launch" / "molmo_edge.launch.py"
    tree = ast.parse(launch.read_text())  # launch/launch_ros are not wheels: check structure, not run
    functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in functions
    text = launch.read_text()
    assert "LifecycleNode(" in text and 'executable="tracker"' in text
    for argument in ("image_topic", "model", "query", "params_file", "autostart"):
        assert re.search(rf'DeclareLaunchArgument\(\s*"{argument}"', text), argument
    assert '"config", "molmo_edge.yaml"' in text


def test_package_modules_import_each_other_relatively():
    """So the same files work as molmo_edge.ros (pip) and molmo_edge_ros (colcon)."""
    for path in (ROS2_NODES / "molmo_edge_ros").glob("*.py"):
        text = path.read_text()
        assert not re.search(r"^\s*(from|import)\s+(molmo_edge\.ros|molmo_edge_ros)\b", text, re.M), path.name
