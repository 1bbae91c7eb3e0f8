"""A path under a steady probe for days: `pktbench.watch.probe.Watch` and its records.

Modules: probe (the Watch library object and its config), tracker (answers
to intervals and outages), jsonl (the record file), metrics (the Prometheus
endpoint), report (summary and plot), command (the two CLI commands). Nothing
is imported here, so the CLI can register the commands without the engine.
"""
