"""Inspect pycnn's kernels: resources, occupancy and instruction mix."""
