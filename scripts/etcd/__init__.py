"""etcd's v3 gRPC KV API, the few messages the benchmark needs (etcd_kv.proto)."""
