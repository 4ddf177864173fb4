// Package store is the hub's only door to etcd: it owns the key layout, the value encodings and every transaction the
// hub runs. Nothing else in the hub builds etcd keys, so the layout below is the whole contract between hub replicas
// (and between a hub and the data dir it restarts on).
//
// Key layout (all keys under Prefix = "/fedgate/v1/"):
//
//	/fedgate/v1/hub/<Kind>/<namespace>/<name>            object applied at the hub (value: the object's Kubernetes JSON)
//	/fedgate/v1/reports/<cluster>/<Kind>/<ns>/<name>     object a spoke reported (value: Kubernetes JSON)
//	/fedgate/v1/clusters/<cluster>                       ClusterRecord JSON: east-west address, labels, agent
//	                                                     version, joined/last-seen times
//	/fedgate/v1/presence/<cluster>/<lease>               one per open Report stream of the cluster, attached to that
//	                                                     stream's lease (value: connected-since, RFC 3339); the
//	                                                     cluster is connected while any of them exists
//	/fedgate/v1/syncstate/<cluster>                      SyncState JSON: sent/acked/nacked graph revision, last NACK,
//	                                                     projection error
//	/fedgate/v1/graph/<cluster>                          GraphRecord JSON: SpokeConfig JSON, its hash, graph revision
//	/fedgate/v1/status/<Kind>/<ns>/<name>                compiled status of a hub object (compiler.ObjectStatus JSON)
//	/fedgate/v1/status/<Kind>/<ns>/<name>@<cluster>      compiled status of an object reported by <cluster>
//	/fedgate/v1/leader/<lease>                           compile leader election (concurrency.Election)
//	/fedgate/v1/kube-leader/<lease>                      hub-cluster mirror leader election (hub --kubeconfig)
//	/fedgate/v1/keys/session                             a KeyRing sealed with the key-encryption key (sealedRing JSON:
//	                                                     its id, a nonce, the AES-256-GCM of the KeyRing JSON; hubs
//	                                                     before sealing wrote the KeyRing JSON itself): session-token
//	                                                     HMAC keys, newest (signing) first, then the previous one
//	                                                     (still verifies); 32 random bytes each
//	/fedgate/v1/keys/gossip                              the same, of spoke gossip encryption keys
//	/fedgate/v1/revoked/<serial>                         a revoked certificate (written by hub/registration; JSON
//	                                                     naming the cluster it was issued to, read by the compile)
//	/fedgate/v1/ca                                       CARecord JSON: the public CA bundle every hub replica signs
//	                                                     with (created by the first replica; see ClaimCA)
//
// Cluster-scoped kinds (GatewayClass) have an empty namespace segment: /fedgate/v1/hub/GatewayClass//<name>. Kubernetes
// names and namespaces cannot contain "/" (or "@"), and the store refuses any that do, so every key parses back
// unambiguously.
//
// Who writes what: hub/ and status/ and graph/ are written only by the hub (graph/, status/ and keys/ only by the
// compile leader, guarded by its election key; keys/ is rotated every --key-rotation period and its values are
// secrets: sealed at rest, never logged, never listed by hubctl); reports/<cluster>/ only on behalf of that cluster's Report stream;
// presence/ only through leases, so a hub that dies takes its clusters' presence with it after the lease TTL.
//
// Object values are the Kubernetes JSON itself, not a protobuf envelope: kind, namespace and name are in the key and
// apiVersion is in the JSON, and `etcdctl get` shows an operator exactly what was applied.
//
// etcd limits: a transaction may hold at most MaxTxnOps operations (an external etcd's --max-txn-ops, given to the hub
// as --etcd-max-txn-ops, 128 by default as in etcd; the embedded server is started with 10000) and a request at most
// MaxRequestBytes (1.5 MiB by default). Writes that need not be atomic (graphs, statuses, report snapshots too big for
// one request, the hub-cluster mirror's objects) are chunked to fit; writes that must be atomic (hubctl's apply and
// delete) fail with a clear error when they cannot fit.
package store
