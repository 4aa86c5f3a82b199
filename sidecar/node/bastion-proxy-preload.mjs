// bastion-edge preload: make Node's global fetch honour HTTPS_PROXY / HTTP_PROXY / NO_PROXY.
//
// Node's built-in fetch (used by openai-node v5+) ignores the proxy variables before
// Node 24, and on 24+ unless NODE_USE_ENV_PROXY=1. Loaded with
//   NODE_OPTIONS="--import /abs/path/bastion-proxy-preload.mjs"
// (which `bastion-edge env` prints), it installs undici's EnvHttpProxyAgent as the
// global dispatcher, so every fetch() of the unmodified app goes through the proxy.
// The CA still comes from NODE_EXTRA_CA_CERTS. Node's http/https modules (axios,
// got, ...) are not affected; use transparent mode or NODE_USE_ENV_PROXY=1 on Node 24+.
//
// undici is resolved next to this file (sidecar/node/node_modules, installed by `make`).

const proxyVars = ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"];

if (proxyVars.some((name) => process.env[name])) {
  let undici;
  try {
    undici = await import("undici");
  } catch (error) {
    throw new Error(
      "bastion-edge preload: cannot load undici next to " + import.meta.url +
      " (run `make install` in the bastion-edge checkout, or `npm ci` in sidecar/node): " +
      error.message);
  }
  undici.setGlobalDispatcher(new undici.EnvHttpProxyAgent());
  if (process.env.BASTION_EDGE_PRELOAD_DEBUG) {
    process.stderr.write("bastion-edge preload: global fetch now uses EnvHttpProxyAgent\n");
  }
}
