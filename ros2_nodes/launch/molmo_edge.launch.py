"""Launch the molmo_edge_ros tracker as a lifecycle node.

    ros2 launch molmo_edge_ros molmo_edge.launch.py image_topic:=/camera/color/image_raw \
        query:="Track the red circle." model:=/models/my_bundle

Parameters come from config/molmo_edge.yaml (or params_file:=...); the `model`, `backend` and
`query` arguments override it only when given. With autostart:=true (the default) the node is
configured and activated right away; with false, drive it yourself:
`ros2 lifecycle set /molmo_edge configure`, then `activate`.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from lifecycle_msgs.msg import Transition

PACKAGE = "molmo_edge_ros"


def _truthy(text: str) -> bool:
    return text.strip().lower() in ("1", "true", "yes", "on")


def _node_and_transitions(context):
    arg = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731

    overrides = {}
    if arg("model"):
        overrides["model"] = arg("model")
    if arg("backend"):
        overrides["backend"] = arg("backend")
    if arg("query"):
        overrides["queries"] = [arg("query")]
    if arg("use_depth"):
        overrides["use_depth"] = _truthy(arg("use_depth"))

    node = LifecycleNode(
        package=PACKAGE,
        executable="tracker",
        name=arg("node_name"),
        namespace=arg("namespace"),
        parameters=[arg("params_file")] + ([overrides] if overrides else []),
        remappings=[
            ("image", arg("image_topic")),
            ("image/compressed", arg("image_topic") + "/compressed"),
            ("camera_info", arg("camera_info_topic")),
            ("depth", arg("depth_topic")),
        ],
        output="screen",
    )
    actions = [node]
    if _truthy(arg("autostart")):
        # configure now; once the node reports "inactive", activate it
        actions.append(RegisterEventHandler(OnStateTransition(
            target_lifecycle_node=node,
            goal_state="inactive",
            entities=[EmitEvent(event=ChangeState(
                lifecycle_node_matcher=matches_action(node),
                transition_id=Transition.TRANSITION_ACTIVATE,
            ))],
        )))
        actions.append(EmitEvent(event=ChangeState(
            lifecycle_node_matcher=matches_action(node),
            transition_id=Transition.TRANSITION_CONFIGURE,
        )))
    return actions


def generate_launch_description():
    default_params = os.path.join(get_package_share_directory(PACKAGE), "config", "molmo_edge.yaml")
    arguments = [
        DeclareLaunchArgument("image_topic", default_value="/camera/image_raw",
                              description="sensor_msgs/Image topic to track on"),
        DeclareLaunchArgument("camera_info_topic", default_value="/camera/camera_info",
                              description="sensor_msgs/CameraInfo of that camera (for 3-D points)"),
        DeclareLaunchArgument("depth_topic", default_value="/camera/depth/image_raw",
                              description="depth image registered to image_topic (used with use_depth:=true)"),
        DeclareLaunchArgument("model", default_value="",
                              description="checkpoint or bundle folder (default: from params_file)"),
        DeclareLaunchArgument("backend", default_value="",
                              description="auto | torch | onnx | tensorrt (default: from params_file)"),
        DeclareLaunchArgument("query", default_value="",
                              description="one prompt, e.g. 'Track the red circle.' (default: from params_file)"),
        DeclareLaunchArgument("use_depth", default_value="",
                              description="true/false (default: from params_file)"),
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="ROS parameters YAML"),
        DeclareLaunchArgument("node_name", default_value="molmo_edge"),
        DeclareLaunchArgument("namespace", default_value=""),
        DeclareLaunchArgument("autostart", default_value="true",
                              description="configure and activate the lifecycle node at launch"),
    ]
    return LaunchDescription(arguments + [OpaqueFunction(function=_node_and_transitions)])
