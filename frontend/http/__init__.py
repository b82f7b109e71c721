"""HTTP/1.1 on the frontend's loop: one protocol (httptools, orjson), a small router,
the probes and metrics routes, and TF Serving's REST API."""
