"""Process wiring: the App, the embedded services, signal handling."""
