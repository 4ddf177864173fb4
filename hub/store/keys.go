package store

import (
	"fmt"
	"strings"
)

// Prefix is the root of every fedgate key. The version segment lets a future layout live beside this one during a
// migration.
const Prefix = "/fedgate/v1/"

// Key prefixes of the layout documented in the package comment.
const (
	HubPrefix       = Prefix + "hub/"
	ReportsPrefix   = Prefix + "reports/"
	ClustersPrefix  = Prefix + "clusters/"
	PresencePrefix  = Prefix + "presence/"
	SyncStatePrefix = Prefix + "syncstate/"
	GraphPrefix     = Prefix + "graph/"
	StatusPrefix    = Prefix + "status/"
	// RevokedPrefix holds one key per revoked certificate serial (written by hub/registration); the compile reads
	// the cluster each was issued to, so spokes refuse them east-west.
	RevokedPrefix = Prefix + "revoked/"
	// JoinedPrefix holds one join record per joined cluster (written by hub/registration at join, deleted at
	// removal); the hub-cluster mirror watches it, so a ManagedCluster appears at join rather than at first connect.
	JoinedPrefix = Prefix + "joined/"
	// LeaderPrefix is the concurrency.Election prefix of the compile leader.
	LeaderPrefix = Prefix + "leader"
	// KubeLeaderPrefix is the concurrency.Election prefix of the hub-cluster mirror: with several hub replicas one
	// writes to the hub cluster at a time.
	KubeLeaderPrefix = Prefix + "kube-leader"
)

// HubKey is the key of an object applied at the hub.
func HubKey(kind, namespace, name string) string {
	return HubPrefix + kind + "/" + namespace + "/" + name
}

// ReportKey is the key of an object reported by cluster.
func ReportKey(cluster, kind, namespace, name string) string {
	return ReportsPrefix + cluster + "/" + kind + "/" + namespace + "/" + name
}

// ReportClusterPrefix is the prefix of every object reported by cluster.
func ReportClusterPrefix(cluster string) string { return ReportsPrefix + cluster + "/" }

// ClusterKey is the key of a cluster record.
func ClusterKey(cluster string) string { return ClustersPrefix + cluster }

// PresenceKey is the lease-bound key of one Report stream of cluster; it exists while that stream is open.
func PresenceKey(cluster, stream string) string { return PresenceClusterPrefix(cluster) + stream }

// PresenceClusterPrefix holds the presence keys of every open Report stream of cluster: it is connected while any
// key is under it.
func PresenceClusterPrefix(cluster string) string { return PresencePrefix + cluster + "/" }

// SyncStateKey is the key of a cluster's sync state.
func SyncStateKey(cluster string) string { return SyncStatePrefix + cluster }

// GraphKey is the key of a cluster's projected SpokeConfig.
func GraphKey(cluster string) string { return GraphPrefix + cluster }

// StatusKey is the key of an object's compiled status; cluster is empty for objects applied at the hub.
func StatusKey(cluster, kind, namespace, name string) string {
	k := StatusPrefix + kind + "/" + namespace + "/" + name
	if cluster != "" {
		k += "@" + cluster
	}
	return k
}

// objectKeyParts splits "<Kind>/<namespace>/<name>" (the tail of a hub, report or status key).
func objectKeyParts(tail string) (kind, namespace, name string, err error) {
	parts := strings.Split(tail, "/")
	if len(parts) != 3 || parts[0] == "" || parts[2] == "" {
		return "", "", "", fmt.Errorf("malformed object key %q", tail)
	}
	return parts[0], parts[1], parts[2], nil
}

// CheckSegment refuses a name that would change the shape of a key. Kubernetes names never contain these characters,
// so this only fires on malformed or hostile input (a spoke reporting name "../x").
func CheckSegment(field, v string, allowEmpty bool) error {
	if v == "" {
		if allowEmpty {
			return nil
		}
		return fmt.Errorf("%s: Required value", field)
	}
	if strings.ContainsAny(v, "/@\x00") || v == "." || v == ".." {
		return fmt.Errorf("%s: Invalid value: %q: must not contain '/' or '@'", field, v)
	}
	return nil
}
