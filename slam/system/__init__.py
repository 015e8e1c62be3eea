"""The SLAM system: keyframe store, frame graph, frontend, backend, trajectory filler."""
