"""molmo_edge_ros: the ROS 2 side of molmo-edge (installed by pip as `molmo_edge.ros`).

Message plumbing, usable without the node and tested on real message types:
- `image_conversion`: sensor_msgs/Image and CompressedImage ↔ numpy
- `pointcloud`: points → sensor_msgs/PointCloud2 (x, y, z, u, v, track_id, query_index, confidence)
- `markers`: points → visualization_msgs/MarkerArray for RViz
- `diagnostics`: stats → diagnostic_msgs/DiagnosticArray
- `detections`: points → vision_msgs/Detection2DArray (only when vision_msgs is installed)
- `camera_info`: sensor_msgs/CameraInfo ↔ molmo_edge.calibration CameraIntrinsics
- `params`: the node's parameters as a typed model, declared on and read from an rclpy node

The node:
- `node`: `MolmoEdgeNode`, the lifecycle node (model loaded at activate, freed at deactivate)
- `main`: `main()` of the `molmo-edge-ros` console script / `ros2 run molmo_edge_ros tracker`
- `frame_input`: the latest-frame slot fed by the subscriptions, depth pairing by stamp
- `outputs`: one window's events → ~/points, ~/markers, ~/detections, ~/events
- `health`: window rate and latency for /diagnostics

Modules import each other relatively so the same code runs as `molmo_edge.ros` (pip) and as
`molmo_edge_ros` (colcon). Nothing is imported here: `import molmo_edge.ros` needs no rclpy.
"""
