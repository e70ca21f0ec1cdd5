"""The configuration's one error (settings and key files raise it)."""


class ConfigError(Exception):
    """A configuration problem, naming the key and what is wrong with it."""

    def __init__(self, key: str, problem: str):
        super().__init__(f"config error: {key}: {problem}")
        self.key = key
        self.problem = problem
