from tests.daemon.helpers import daemons  # noqa: F401
