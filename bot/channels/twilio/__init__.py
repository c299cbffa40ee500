"""The SMS and WhatsApp channel through Twilio (see channel.py)."""
