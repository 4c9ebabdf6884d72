"""Traffic routers: shift a share of requests to a canary, one module per data-plane API.

`registry` holds the kinds (`RouterKind`) and builds a router for a rollout (`make_router`); `base` the
interface every router implements; `nginx` and `gateway_api` the two implementations; `tasks` the Prefect
tasks flows call (each opens a client, calls one router method, and follows the KUBE_API retry policy).
"""
