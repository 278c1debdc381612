"""`bench`: per-segment and end-to-end latency on the host runtimes or on Android devices."""
