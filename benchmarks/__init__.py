"""The asyncbulk benchmarks: the library against the ways people do this today, in one run.

`python -m benchmarks` runs every scenario and prints one table (and writes `RESULTS.md`);
`--quick` runs a small version in under a minute; `python -m benchmarks SCENARIO` runs one.
The simulator serves from a process of its own (`benchmarks._server`) and every contender is
measured in a fresh client process (`benchmarks._client`), so each figure is that contender's own.
"""
