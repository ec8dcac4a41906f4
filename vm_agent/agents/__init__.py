"""The ACP gateway: coding agents as sessions that stream to any number of viewers."""
