"""Running as a service: systemd notification and watchdog, privilege drop, structured logs, metrics endpoint."""
