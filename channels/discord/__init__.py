"""The Discord channel: a discord.py 2 gateway client, DMs and support threads in guilds."""
