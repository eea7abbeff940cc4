"""ticketexport: helpdesk ticket views exported to CSV exactly as of the click."""

__version__ = "0.1.0"
