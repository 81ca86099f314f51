"""aigw benchmarks: ``python -m bench.run`` measures direct provider calls and aigw side by side."""
