"""What a `run --workers N` parent tells each worker (environment variable names)."""

WORKER_ID_ENV = "BASTION_WORKER_ID"  # 0..N-1; also the x-bastion-edge-worker header
WORKER_SOCKET_ENV = "BASTION_WORKER_ADMIN_SOCKET"  # the worker's /readyz, /metrics
