"""Dense bundle adjustment over keyframe poses, inverse depths and focal length."""
