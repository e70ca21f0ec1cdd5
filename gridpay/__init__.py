"""The `gridpay` command: the console entry and every command group; nothing imports this package."""
