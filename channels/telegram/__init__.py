"""The Telegram channel: Bot API webhook or long polling, on python-telegram-bot 22."""
