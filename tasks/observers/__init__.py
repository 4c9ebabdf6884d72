"""Metric observers: the built-in checks' PromQL for one data plane each, as Flagger's observers do.

A check named `request-success-rate` or `request-duration` needs no query from the user: the observer of the data
plane that carries the canary's traffic writes it with that data plane's own metric names and labels
(`nginx_ingress` for ingress-nginx, `envoy_gateway` for Envoy Gateway's proxies). `registry` holds the kinds and
which observer each traffic router uses by default; `base` the interface and what a query is about (`Target`).
"""
