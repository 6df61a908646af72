"""Benchmarks of cpixelcnn, a package of the source checkout (not installed with cpixelcnn): run
each from the checkout's root as ``python -m benchmarks.<name>``, or all through ``cpixelcnn bench``.
``common`` holds what they share (device info, timing, JSON results, plots)."""
