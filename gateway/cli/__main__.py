"""``python -m gateway.cli``: what the supervisors start (the same as the ``aigw`` script)."""

from gateway.cli import main

if __name__ == "__main__":
    main()
