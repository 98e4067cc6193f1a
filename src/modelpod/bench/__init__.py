"""`modelpod bench` and `modelpod plan`: load against a running server, and sizing from what was measured.

    workload.py        the requests to send: the spec's examples, or a file of request bodies
    loadgen.py         one load step, closed loop (N callers) or open loop (Poisson arrivals at R/s)
    sse.py             one streamed (server-sent events) generation request, timed chunk by chunk
    server_metrics.py  the server's own /metrics before and after a step: queue against model time,
                       batch sizes, CPU and memory
    sweep.py           a run: one step, or a sweep that raises the load until a limit breaks; the knee
    report.py          the result as JSON and as a table of figures
    plot.py            latency percentiles and throughput against load (matplotlib)
    plan.py            replicas, resources, autoscaling targets and rollout time from a result and an SLO

The load generator needs the `bench` extra (aiohttp, hdrhistogram; matplotlib for plots), imported only
inside the modules that use them: `_deps.require` names the extra when one is missing.
"""
