"""Running the proxy next to apps: sidecar entrypoint, transparent redirect rules,
the Node preload, the CA bundles and the environment an app needs."""
