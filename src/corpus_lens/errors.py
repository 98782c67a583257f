"""Exceptions of corpus_lens. The CLI turns each into one line on stderr and an exit code."""


class CorpusLensError(Exception):
    """Base class: a failure the user can act on. Exit code 1."""

    exit_code = 1


class ConfigError(CorpusLensError):
    """A bad option, configuration file or policy. Exit code 2."""

    exit_code = 2


class InputError(CorpusLensError):
    """An input path or shard that cannot be read as expected. Exit code 1."""


class ModelError(CorpusLensError):
    """A model directory or model file that is missing or incompatible. Exit code 2."""

    exit_code = 2


class OutputError(CorpusLensError):
    """An output folder that cannot be written as asked (e.g. it holds another scan)."""

    exit_code = 2
