"""The pure decision core: no mitmproxy, no I/O.

Plain values in (a request's head, its parsed body, one rules snapshot), plain values
out (one immutable plan per request). Everything here is unit-tested without a proxy.
"""
