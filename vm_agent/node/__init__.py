"""Node endpoints and duties: health, system info, logs, control-plane callbacks, systemd."""
