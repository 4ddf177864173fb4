package store

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strconv"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Limits the embedded server is started with. The transaction limit is raised from etcd's 128 so that an Apply of a
// few thousand objects stays one atomic transaction; the request limit leaves room for large SpokeConfigs.
const (
	EmbeddedMaxTxnOps       = 10000
	EmbeddedMaxRequestBytes = 8 << 20
	// DefaultMaxTxnOps and DefaultMaxRequestBytes are etcd's own defaults, assumed for an external cluster.
	DefaultMaxTxnOps       = 128
	DefaultMaxRequestBytes = 3 << 19 // 1.5 MiB
)

// The embedded server's raft tick and election timeout, in milliseconds (etcd's defaults are 100 and 1000); etcd
// requires the timeout to be at least five ticks.
const (
	embeddedTickMs     = 10
	embeddedElectionMs = 5 * embeddedTickMs
)

// EmbeddedConfig configures an etcd server running inside the hub process.
type EmbeddedConfig struct {
	// DataDir holds etcd's WAL and snapshots and, in EmbeddedTLSDir, its certificates; reusing it across restarts
	// keeps every object, report and graph.
	DataDir string
	// ClientPort and PeerPort on 127.0.0.1; 0 picks a free port.
	ClientPort, PeerPort int
	// MaxTxnOps is the server's limit of operations per transaction; 0 means EmbeddedMaxTxnOps.
	MaxTxnOps int
	// LogLevel of etcd's own zap logger ("debug", "info", "warn", "error"); empty silences it, because etcd logs
	// routine shutdown as errors and would drown the hub's own log.
	LogLevel string
}

// Embedded is a running single-member etcd server.
type Embedded struct {
	etcd      *embed.Etcd
	client    TLSFiles
	clientTLS *tls.Config
}

// StartEmbedded starts etcd on 127.0.0.1 and waits until it serves. Only loopback is used: the embedded server is a
// private detail of one hub, never a cluster member others join. Its client and peer URLs serve TLS only and require
// a client certificate of its own CA (see EmbeddedTLSDir), so a local user who can reach the port, but not read the
// data dir, cannot read or write anything.
func StartEmbedded(ctx context.Context, c EmbeddedConfig) (*Embedded, error) {
	if c.DataDir == "" {
		return nil, errors.New("embedded etcd: data dir must be set")
	}
	certs := embeddedTLS{dir: filepath.Join(c.DataDir, EmbeddedTLSDir)}
	if err := certs.ensure(time.Now()); err != nil {
		return nil, err
	}
	clientTLS, err := ClientTLS(certs.client())
	if err != nil {
		return nil, fmt.Errorf("embedded etcd client certificate: %w", err)
	}
	clientTLS.MinVersion = tls.VersionTLS13
	server := transport.TLSInfo{
		CertFile:       certs.path(embeddedServerCert),
		KeyFile:        certs.path(embeddedServerKey),
		TrustedCAFile:  certs.path(embeddedCAFile),
		ClientCertAuth: true,
		MinVersion:     tls.VersionTLS13,
	}
	cfg := embed.NewConfig()
	cfg.Name = "fedgate-hub"
	cfg.Dir = c.DataDir
	cfg.MaxTxnOps = EmbeddedMaxTxnOps
	if c.MaxTxnOps > 0 {
		cfg.MaxTxnOps = uint(c.MaxTxnOps)
	}
	cfg.MaxRequestBytes = EmbeddedMaxRequestBytes
	// The member is the cluster's only voter, so nothing can contend its election, yet raft makes it wait for one at
	// every start: etcd fast-forwards a single member's election ticks but one, and raft then waits a random 1 to
	// ElectionMs/TickMs ticks more: 0.1–1 s of every restart with etcd's defaults (100 ms ticks, 1 s), 10–50 ms with
	// these. Neither setting touches durability, and heartbeats go to no peer.
	cfg.TickMs, cfg.ElectionMs = embeddedTickMs, embeddedElectionMs
	// Compact history older than an hour: the hub only watches from recent revisions and re-reads on ErrCompacted.
	cfg.AutoCompactionMode = embed.CompactorModePeriodic
	cfg.AutoCompactionRetention = "1h"
	if c.LogLevel == "" {
		cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	} else {
		cfg.LogLevel = c.LogLevel
	}
	// A single member has no peers to dial it, but etcd needs a peer URL: it gets the same TLS and client-certificate
	// check as the client URL.
	cfg.ClientTLSInfo, cfg.PeerTLSInfo = server, server
	clientURL := loopbackURL(c.ClientPort)
	peerURL := loopbackURL(c.PeerPort)
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{clientURL}, []url.URL{clientURL}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peerURL}, []url.URL{peerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd in %s: %w", c.DataDir, err)
	}
	select {
	case <-e.Server.ReadyNotify():
		return &Embedded{etcd: e, client: certs.client(), clientTLS: clientTLS}, nil
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd: %w", err)
	case <-ctx.Done():
		e.Close()
		return nil, ctx.Err()
	case <-time.After(60 * time.Second):
		e.Close()
		return nil, errors.New("embedded etcd: not ready after 60s")
	}
}

func loopbackURL(port int) url.URL {
	return url.URL{Scheme: "https", Host: "127.0.0.1:" + strconv.Itoa(port)}
}

// Endpoints are the client addresses actually bound (real ports, also when 0 was asked for).
func (e *Embedded) Endpoints() []string {
	var eps []string
	for _, l := range e.etcd.Clients {
		eps = append(eps, "https://"+l.Addr().String())
	}
	return eps
}

// ClientFiles are the CA, certificate and key a client of this server needs (etcdctl's --cacert, --cert, --key).
func (e *Embedded) ClientFiles() TLSFiles { return e.client }

// Connect opens a client to this server with the hub's client certificate.
func (e *Embedded) Connect(ctx context.Context) (*clientv3.Client, error) {
	return Connect(ctx, e.Endpoints(), e.clientTLS)
}

// Err reports a fatal server error (nil value when the server stops normally).
func (e *Embedded) Err() <-chan error { return e.etcd.Err() }

// Close stops the server; it is safe to call once.
func (e *Embedded) Close() { e.etcd.Close() }

// Connect opens a client to endpoints, over TLS with tlsCfg when it is not nil (https:// endpoints). etcd's client logs
// through zap; it is silenced because every error it would log also reaches the caller.
func Connect(ctx context.Context, endpoints []string, tlsCfg *tls.Config) (*clientv3.Client, error) {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		TLS:         tlsCfg,
		DialTimeout: 10 * time.Second,
		// A member that stops answering without closing its connections (frozen, cut off) would otherwise hold every
		// request, watch and lease keepalive sent over them until TCP gives up, minutes later: pings find it out
		// (grpc-go pings at most every 10 s), and the client moves to another member, its watches resuming from their
		// last revision.
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
		Logger:               zap.NewNop(),
		MaxCallSendMsgSize:   EmbeddedMaxRequestBytes + 1<<20,
		// Reads of whole prefixes (ReadInputs) can be far larger than one request.
		MaxCallRecvMsgSize: 1 << 30,
	})
	if err != nil {
		return nil, fmt.Errorf("connect to etcd %v: %w", endpoints, err)
	}
	return cli, nil
}
