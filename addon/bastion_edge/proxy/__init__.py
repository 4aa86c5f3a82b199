"""The mitmproxy edge: the hooks that build a plan's inputs and apply the plan.

The only package (with `cli`) that imports mitmproxy.
"""
