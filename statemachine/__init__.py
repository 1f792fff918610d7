"""The state machine: its one ASL file (download.asl.json) and the placeholders that make it deployable."""
