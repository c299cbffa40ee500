"""The Telegram channel: the bot for tipsters and the officers' group (see channel.py)."""
