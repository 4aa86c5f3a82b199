"""Responses state kept by the proxy: Bastion's `/v1/responses` is stateless.

Plain code, no mitmproxy: `records` (what is kept), `capture` (request + reply ->
record), `chain` (the stored conversation behind a `previous_response_id`), `shapes`
(OpenAI's JSON for retrieve, delete, input_items), `store` / `sqlite_store` /
`redis_store`, `crypto`. The proxy side lives in `bastion_edge.proxy.responses_keeper`.
"""
