"""Devices: the message contract, the vital catalogue, the registry and the simulator."""
