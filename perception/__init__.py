"""Perception: cameras and point clouds, the scene graph, grounding of instructions, and spoken instructions.

Submodules (import the one you need; heavy dependencies load only there):
- `cameras`: pinhole models from PyBullet matrices or ROS CameraInfo, depth -> metric depth -> Open3D point clouds.
- `scene_graph`: table removal, clustering, colour/shape/pose per object -> `objects.DetectedObject` list.
- `language` / `grounding`: instruction text -> references -> scene objects, or a `Refusal` with a reason.
- `speech`: pocketsphinx with a grammar built from the task vocabulary; `speech_synth`: espeak-ng + sox test audio.

Perception never imports the simulator (`keystone_vla.sim`): it must run on a real robot's camera and microphone.
"""
