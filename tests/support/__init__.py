"""What the tests share besides fixtures: ports, waiting with a deadline, ``dagster`` processes,
stand-ins for retrieved hits. The fixtures themselves (services, stores, both warehouse
engines) live in ``tests/conftest.py``."""
