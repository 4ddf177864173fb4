package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/fedgate/fedgate/apis/clientconfig"
	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/apis/spokeconfig"
	"github.com/fedgate/fedgate/hub/auth"
	"github.com/fedgate/fedgate/hub/controller"
	"github.com/fedgate/fedgate/hub/kube"
	"github.com/fedgate/fedgate/hub/pki"
	"github.com/fedgate/fedgate/hub/registration"
	"github.com/fedgate/fedgate/hub/store"
	"github.com/fedgate/fedgate/hub/validation"
)

// Config is everything a hub process needs. Each documented default is what DefaultConfig returns (a test holds the
// two together) and what cmd/hub's flags default to.
type Config struct {
	// Listen is the gRPC address for hubctl and spokes; it serves TLS only. Default: `127.0.0.1:9443`.
	Listen string
	// AdvertiseAddress is host:port spokes and hubctl dial; it goes into join commands and the admin config, and its
	// host (with 127.0.0.1 and localhost) into the serving certificate. Empty means Listen. Default: ``.
	AdvertiseAddress string
	// PKIDir holds the CA (ca.crt, ca.key; created on first start). Empty means <DataDir>/pki. Default: ``.
	PKIDir string
	// CACert and CAKey load the CA from these files instead of PKIDir (both or neither). Default: ``.
	CACert string
	// CAKey: see CACert. Default: ``.
	CAKey string
	// CertTTL is the lifetime of cluster certificates; spokes renew at two thirds of it. Default: `24h0m0s`.
	CertTTL time.Duration
	// AdminConfig is where the bootstrap writes the admin credential (if no file is there yet); empty writes none.
	// cmd/hub defaults it to ~/.fedgate/config. Default: ``.
	AdminConfig string
	// AdminCertTTL is the lifetime of the bootstrap admin credential. Default: `8760h0m0s`.
	AdminCertTTL time.Duration
	// AdminSecret, NAMESPACE/NAME, is a Secret of the hub cluster where the hub keeps an admin credential (key
	// `config`, the admin config file's format) when the Secret does not exist: how an operator of a hub running in
	// a pod gets one. Needs a hub cluster. Default: ``.
	AdminSecret string
	// HandshakeTimeout bounds a connection's TLS handshake, so a client that connects and stays silent holds
	// nothing for long. Default: `10s`.
	HandshakeTimeout time.Duration
	// DataDir is the embedded etcd's data directory, with its certificates (etcd-tls) and the key-encryption key;
	// state survives restarts on the same directory. With EtcdEndpoints only the default PKIDir is in it. Default:
	// `./fedgate-data`.
	DataDir string
	// EtcdEndpoints, when set, use an external etcd cluster instead of the embedded one (several hubs may share it;
	// one compiles at a time). Default: `` (embedded).
	EtcdEndpoints []string
	// EtcdCA is the CA file that verifies an external etcd's serving certificate; https:// endpoints need it (the
	// embedded etcd uses certificates of its own, made in DataDir). Default: ``.
	EtcdCA string
	// EtcdCert and EtcdKey are the hub's client certificate and key for an external etcd that checks client
	// certificates (its --client-cert-auth); both or neither, with EtcdCA. Default: ``.
	EtcdCert string
	// EtcdKey: see EtcdCert. Default: ``.
	EtcdKey string
	// EtcdAllowPlaintext accepts http:// EtcdEndpoints, which anyone on the path to etcd can read and write (the key
	// rings are sealed, but routes, clusters and certificates' records are not): for a throwaway test etcd only.
	// Default: false (http:// endpoints are refused).
	EtcdAllowPlaintext bool
	// KeyEncryptionKeyFile holds the keys that seal the session and gossip key rings in etcd (one base64 32-byte key
	// per line: the first seals, every one opens). Every hub sharing an etcd needs the same file, so with
	// EtcdEndpoints it is required; with the embedded etcd, empty means <DataDir>/key-encryption-key, made on first
	// start. Default: ``.
	KeyEncryptionKeyFile string
	// EtcdMaxTxnOps is how many operations the external etcd allows in one transaction (its --max-txn-ops). Writes
	// that need not be atomic (graphs, statuses, reports, the hub-cluster mirror) are chunked to fit it; an atomic one
	// (hubctl apply or delete) that does not fit is refused. Unused with the embedded etcd, which allows
	// store.EmbeddedMaxTxnOps. Default: `128`.
	EtcdMaxTxnOps int
	// EtcdClientPort and EtcdPeerPort of the embedded etcd on 127.0.0.1; 0 picks a free port. Default: `0`.
	EtcdClientPort int
	// EtcdPeerPort: see EtcdClientPort. Default: `0`.
	EtcdPeerPort int
	// EtcdLogLevel is the embedded etcd's own log level; empty silences it. Default: ``.
	EtcdLogLevel string
	// CompileHoldOff: the compile waits this long after a change for more. Default: `20ms`.
	CompileHoldOff time.Duration
	// CompileMaxDelay bounds how long a stream of changes can postpone a compile. Default: `200ms`.
	CompileMaxDelay time.Duration
	// ShutdownGrace is how long Close waits for in-flight RPCs before cutting streams. Default: `5s`.
	ShutdownGrace time.Duration
	// KeyRotation is how often the session and gossip keys are replaced (the previous key stays valid one more
	// period). Default: `24h0m0s`.
	KeyRotation time.Duration
	// Kubeconfig, when set, connects the hub to a hub cluster: Gateway API objects applied there are mirrored into
	// the store, their status and ManagedClusters are written back. Default: `` (none).
	Kubeconfig string
	// InCluster uses the pod's service account to reach the hub cluster (instead of Kubeconfig). Default: `false`.
	InCluster bool
	// HubClusterREST, when set, connects to the hub cluster with this config instead of Kubeconfig or InCluster
	// (in-process embedders and tests, whose API servers have no kubeconfig file). No flag sets it; nil means none.
	HubClusterREST *rest.Config
	// Logger for the hub; nil discards logs.
	Logger *slog.Logger
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{
		Listen:           "127.0.0.1:9443",
		DataDir:          "./fedgate-data",
		CertTTL:          24 * time.Hour,
		AdminCertTTL:     365 * 24 * time.Hour,
		HandshakeTimeout: 10 * time.Second,
		EtcdMaxTxnOps:    store.DefaultMaxTxnOps,
		CompileHoldOff:   controller.DefaultHoldOff,
		CompileMaxDelay:  controller.DefaultMaxDelay,
		ShutdownGrace:    5 * time.Second,
		KeyRotation:      controller.DefaultKeyRotation,
	}
}

// Validate reports every problem with c, naming the setting.
func (c Config) Validate() error {
	var errs []error
	if c.Listen == "" {
		errs = append(errs, errors.New("listen: must not be empty"))
	} else if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("listen %q: %w", c.Listen, err))
	}
	if c.AdvertiseAddress != "" {
		if _, _, err := net.SplitHostPort(c.AdvertiseAddress); err != nil {
			errs = append(errs, fmt.Errorf("advertise-address %q: %w", c.AdvertiseAddress, err))
		}
	}
	if (c.CACert == "") != (c.CAKey == "") {
		errs = append(errs, errors.New("ca-cert and ca-key: give both or neither"))
	}
	if c.PKIDir == "" && c.CACert == "" && c.DataDir == "" {
		errs = append(errs, errors.New("pki-dir: must be set when there is no data-dir"))
	}
	if c.CertTTL < 3*time.Second {
		errs = append(errs, fmt.Errorf("cert-ttl %v: must be at least 3s", c.CertTTL))
	}
	if c.AdminCertTTL <= 0 {
		errs = append(errs, fmt.Errorf("admin-cert-ttl %v: must be positive", c.AdminCertTTL))
	}
	if c.HandshakeTimeout <= 0 {
		errs = append(errs, fmt.Errorf("handshake-timeout %v: must be positive", c.HandshakeTimeout))
	}
	if len(c.EtcdEndpoints) == 0 && c.DataDir == "" {
		errs = append(errs, errors.New("data-dir: must be set when no etcd endpoints are given"))
	}
	for _, p := range []struct {
		name string
		v    int
	}{{"etcd-client-port", c.EtcdClientPort}, {"etcd-peer-port", c.EtcdPeerPort}} {
		if p.v < 0 || p.v > 65535 {
			errs = append(errs, fmt.Errorf("%s %d: must be 0..65535", p.name, p.v))
		}
	}
	errs = append(errs, c.validateEtcdTLS()...)
	if len(c.EtcdEndpoints) > 0 && c.KeyEncryptionKeyFile == "" {
		errs = append(errs, errors.New("key-encryption-key-file: required with etcd-endpoints, so every hub sharing the etcd seals and opens the key rings with the same key (make one with `head -c 32 /dev/urandom | base64`)"))
	}
	if c.EtcdMaxTxnOps < 1 {
		errs = append(errs, fmt.Errorf("etcd-max-txn-ops %d: must be positive", c.EtcdMaxTxnOps))
	}
	if c.EtcdClientPort != 0 && c.EtcdClientPort == c.EtcdPeerPort {
		errs = append(errs, fmt.Errorf("etcd-client-port and etcd-peer-port are both %d", c.EtcdClientPort))
	}
	if c.KeyRotation < time.Second {
		errs = append(errs, fmt.Errorf("key-rotation %v: must be at least 1s", c.KeyRotation))
	}
	if n := boolCount(c.Kubeconfig != "", c.InCluster, c.HubClusterREST != nil); n > 1 {
		errs = append(errs, errors.New("kubeconfig, in-cluster and a hub-cluster REST config: give at most one"))
	}
	errs = append(errs, c.validateAdminSecret()...)
	if c.CompileHoldOff <= 0 {
		errs = append(errs, fmt.Errorf("compile-holdoff %v: must be positive", c.CompileHoldOff))
	}
	if c.CompileMaxDelay < c.CompileHoldOff {
		errs = append(errs, fmt.Errorf("compile-max-delay %v: must be at least compile-holdoff %v", c.CompileMaxDelay, c.CompileHoldOff))
	}
	if c.ShutdownGrace < 0 {
		errs = append(errs, fmt.Errorf("shutdown grace %v: must not be negative", c.ShutdownGrace))
	}
	return errors.Join(errs...)
}

// Limits of the gRPC server. Reports of large clusters arrive as one snapshot message, hence the receive limit well
// above gRPC's 4 MiB default; configs sent down are bounded by spokeconfig.MaxUpdateBytes, the limit spokes receive
// with (the compile loop records a larger projection as an error instead). A spoke needs three streams at most (Report,
// Subscribe, a Renew), so 100 concurrent streams per connection leave room for hubctl while bounding what one client
// can make the hub hold; grpc-go also bounds its handler goroutines by it, which blunts HTTP/2 rapid-reset floods.
const (
	MaxRecvMsgSize       = 16 << 20
	MaxConcurrentStreams = 100
	MaxHeaderListSize    = 64 << 10
)

// ServerOptions are the hub's gRPC server options: message, header and stream limits, a handshake deadline, and
// keepalives that notice a dead spoke (so its presence lapses) while refusing clients that ping abusively. The
// enforcement MinTime stays below the spoke's one-minute ping.
func ServerOptions(handshakeTimeout time.Duration) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(MaxRecvMsgSize),
		grpc.MaxSendMsgSize(spokeconfig.MaxUpdateBytes),
		grpc.MaxConcurrentStreams(MaxConcurrentStreams),
		grpc.MaxHeaderListSize(MaxHeaderListSize),
		grpc.ConnectionTimeout(handshakeTimeout),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	}
}

// servingTTL is the lifetime of the hub's own serving certificate; it is reissued at two thirds of it.
const servingTTL = 30 * 24 * time.Hour

// Hub is a running hub: etcd (embedded or a client of an external one), the CA and registration, the compile loop
// and the gRPC server.
type Hub struct {
	addr       net.Addr
	advertise  string
	store      *store.Store
	controller *controller.Controller
	ca         *pki.Authority
	reg        *registration.Service
	sessions   *auth.Sessions
	serving    atomic.Pointer[tls.Certificate]
	cli        *clientv3.Client
	etcd       *store.Embedded
	grpc       *grpc.Server
	stopping   chan struct{}
	cancel     context.CancelFunc
	grace      time.Duration
	log        *slog.Logger
	errc       chan error
	wg         sync.WaitGroup
	closeOnce  sync.Once
}

// Start brings a hub up and returns once it serves. ctx bounds start-up only; stop the hub with Close.
func Start(ctx context.Context, cfg Config) (_ *Hub, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("hub config: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	h := &Hub{stopping: make(chan struct{}), grace: cfg.ShutdownGrace, log: log, errc: make(chan error, 3), sessions: auth.NewSessions()}
	defer func() {
		if err != nil {
			h.Close()
		}
	}()
	runCtx, cancelRun := context.WithCancel(context.WithoutCancel(ctx))
	h.cancel = cancelRun
	// Building the CRD validators compiles hundreds of CEL rules; doing it while etcd starts keeps most of that off
	// the first Apply after a (re)start. An Apply that comes first waits for the same build.
	go func() {
		if err := validation.Preload(); err != nil {
			log.Error("building the object validators", "err", err)
		}
	}()

	// Listening comes first, so a start on a taken port fails at once rather than after etcd's. A spoke that reconnects
	// meanwhile waits in its handshake instead of being refused, and is served as soon as the hub serves.
	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	served := false
	defer func() {
		if !served {
			_ = lis.Close()
		}
	}()
	h.addr = lis.Addr()
	h.advertise = cfg.AdvertiseAddress
	if h.advertise == "" {
		h.advertise = h.addr.String()
	}

	// The CA needs no etcd: it is loaded (made, on a first start) while etcd starts.
	caErr := make(chan error, 1)
	go func() {
		var err error
		h.ca, err = loadCA(cfg)
		caErr <- err
	}()
	checks, storeErr := h.openStore(ctx, cfg)
	if err := <-caErr; err != nil {
		return nil, fmt.Errorf("hub CA: %w", err)
	}
	if storeErr != nil {
		return nil, storeErr
	}
	// The store's checks first (a replica with the wrong key-encryption key must not go on to record its CA), then
	// the first reads, independent calls to etcd made at once.
	if err := concurrently(checks...); err != nil {
		return nil, err
	}
	err = concurrently(
		// Before anything is signed or served: every replica sharing this etcd must sign with one CA.
		func() error { return agreeCA(ctx, h.store, h.ca, log) },
		func() error {
			// The registration service watches revocations for as long as the hub runs, hence runCtx.
			reg, err := registration.New(runCtx, h.cli, h.ca, registration.Options{CertTTL: cfg.CertTTL, Logger: log, Sessions: h.sessions})
			if err != nil {
				return fmt.Errorf("registration: %w", err)
			}
			h.reg = reg
			return nil
		},
	)
	if err != nil {
		return nil, err
	}
	// The compile loop campaigns while the rest of the hub starts, so a restarted hub leads, compiles and watches its
	// inputs the sooner.
	h.controller = controller.New(h.store, controller.Config{
		HoldOff: cfg.CompileHoldOff, MaxDelay: cfg.CompileMaxDelay, KeyRotation: cfg.KeyRotation, Logger: log,
	})
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		_ = h.controller.Run(runCtx) // returns only when runCtx ends
	}()

	if err := h.issueServing(); err != nil {
		return nil, fmt.Errorf("hub serving certificate: %w", err)
	}
	if err := h.bootstrapAdmin(cfg.AdminConfig, cfg.AdminCertTTL); err != nil {
		return nil, fmt.Errorf("admin config %s: %w", cfg.AdminConfig, err)
	}

	authn := &auth.Authenticator{Policy: auth.DefaultPolicy(), Revoker: h.reg, Sessions: h.sessions}
	sopts := append(ServerOptions(cfg.HandshakeTimeout),
		grpc.Creds(credentials.NewTLS(auth.ServerTLS(h.ca, h.serving.Load))),
		grpc.ChainUnaryInterceptor(recoverUnary(log), authn.Unary()),
		grpc.ChainStreamInterceptor(recoverStream(log), authn.Stream()),
	)
	h.grpc = grpc.NewServer(sopts...)
	fedgatepb.RegisterAdminServer(h.grpc, &AdminService{
		st: h.store, log: log.With("component", "admin"), reg: h.reg, sessions: h.sessions, ca: h.ca, advertise: h.advertise,
	})
	fedgatepb.RegisterSyncServer(h.grpc, NewSyncService(h.store, log, h.stopping))
	fedgatepb.RegisterRegistrationServer(h.grpc, h.reg)

	h.wg.Add(2)
	served = true
	go func() {
		defer h.wg.Done()
		if err := h.grpc.Serve(lis); err != nil {
			h.errc <- fmt.Errorf("grpc server: %w", err)
		}
	}()
	go func() {
		defer h.wg.Done()
		h.renewServing(runCtx)
	}()
	if cfg.Kubeconfig != "" || cfg.InCluster || cfg.HubClusterREST != nil {
		if err := h.startHubCluster(runCtx, cfg); err != nil {
			return nil, err
		}
	}
	if h.etcd != nil {
		go func() {
			if err, ok := <-h.etcd.Err(); ok && err != nil {
				h.errc <- fmt.Errorf("embedded etcd: %w", err)
			}
		}()
	}
	log.Info("hub serving", "listen", h.addr.String(), "advertise", h.advertise, "caHash", h.ca.ActiveHash())
	return h, nil
}

// startHubCluster connects to the hub cluster and runs the mirror (hub/kube) until the hub stops.
func (h *Hub) startHubCluster(ctx context.Context, cfg Config) error {
	rc := cfg.HubClusterREST
	var err error
	switch {
	case rc != nil:
		rc = rest.CopyConfig(rc)
	case cfg.InCluster:
		rc, err = rest.InClusterConfig()
	default:
		rc, err = clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
	}
	if err != nil {
		return fmt.Errorf("hub cluster: %w", err)
	}
	if cfg.AdminSecret != "" {
		if err := h.bootstrapAdminSecret(ctx, rc, cfg.AdminSecret, cfg.AdminCertTTL); err != nil {
			return fmt.Errorf("admin secret %s: %w", cfg.AdminSecret, err)
		}
	}
	syncer, err := kube.New(kube.Options{
		Config: rc, Store: h.store, Logger: h.log,
		Members: func(ctx context.Context) (map[string]kube.Member, error) {
			recs, err := h.reg.JoinedAll(ctx)
			if err != nil {
				return nil, err
			}
			out := make(map[string]kube.Member, len(recs))
			for name, r := range recs {
				out[name] = kube.Member{Labels: r.Labels, EastWestAddress: r.EastWestAddress, JoinedAt: r.JoinedAt}
			}
			return out, nil
		},
	})
	if err != nil {
		return err
	}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		_ = syncer.Run(ctx)
	}()
	h.log.Info("mirroring the hub cluster", "host", rc.Host)
	return nil
}

// concurrently runs steps at once and returns the error of the first of them, in their order, that failed.
func concurrently(steps ...func() error) error {
	errs := make([]error, len(steps))
	var wg sync.WaitGroup
	for i, step := range steps {
		wg.Go(func() { errs[i] = step() })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func boolCount(bs ...bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}

func loadCA(cfg Config) (*pki.Authority, error) {
	if cfg.CACert != "" {
		return pki.LoadFiles(cfg.CACert, cfg.CAKey)
	}
	dir := cfg.PKIDir
	if dir == "" {
		dir = filepath.Join(cfg.DataDir, "pki")
	}
	return pki.LoadOrCreate(dir)
}

// servingHosts are the names in the hub's serving certificate: the advertised host, and loopback so that hubctl on
// the hub's own machine can always dial it.
func (h *Hub) servingHosts() []string {
	hosts := []string{"127.0.0.1", "localhost"}
	if host, _, err := net.SplitHostPort(h.advertise); err == nil && host != "" && !slices.Contains(hosts, host) {
		hosts = append(hosts, host)
	}
	return hosts
}

// issueServing issues a serving certificate whose chain carries the active CA: a joining cluster has nothing but a
// hash, and pins the CA it finds in the handshake against it.
func (h *Hub) issueServing() error {
	cert, err := h.ca.IssueServing(h.servingHosts(), servingTTL)
	if err != nil {
		return err
	}
	cas := h.ca.Certificates()
	cert.Certificate = append(cert.Certificate, cas[0].Raw)
	h.serving.Store(&cert)
	return nil
}

// renewServing reissues the serving certificate at two thirds of its lifetime (new handshakes pick it up).
func (h *Hub) renewServing(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(servingTTL * 2 / 3):
		}
		if err := h.issueServing(); err != nil {
			h.log.Error("reissuing the hub serving certificate", "err", err)
		}
	}
}

// bootstrapAdmin writes an admin credential to path unless a file is already there (it is never overwritten).
func (h *Hub) bootstrapAdmin(path string, ttl time.Duration) error {
	if path == "" {
		return nil
	}
	if _, err := os.Stat(path); err == nil {
		h.log.Info("admin config present; not rewriting it", "path", path)
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	certPEM, keyPEM, err := h.ca.IssueAdmin(ttl)
	if err != nil {
		return err
	}
	err = clientconfig.Write(path, &clientconfig.Config{
		Hub: h.advertise, CABundle: string(h.ca.BundlePEM()), Certificate: string(certPEM), Key: string(keyPEM),
	})
	if err != nil {
		return err
	}
	h.log.Info("wrote admin config", "path", path)
	return nil
}

// Addr is the address the gRPC server listens on (the real port when Listen asked for 0).
func (h *Hub) Addr() net.Addr { return h.addr }

// AdvertiseAddress is the address spokes and hubctl are told to dial.
func (h *Hub) AdvertiseAddress() string { return h.advertise }

// CA is the hub's certificate authority.
func (h *Hub) CA() *pki.Authority { return h.ca }

// Registration is the hub's registration service.
func (h *Hub) Registration() *registration.Service { return h.reg }

// Sessions is the registry of open cluster streams.
func (h *Hub) Sessions() *auth.Sessions { return h.sessions }

// Store is the hub's store (tests read etcd through it).
func (h *Hub) Store() *store.Store { return h.store }

// Controller is the hub's compile loop (tests wait on it with WaitCompiled).
func (h *Hub) Controller() *controller.Controller { return h.controller }

// Err delivers a fatal error of a component (the gRPC server or embedded etcd stopped on its own).
func (h *Hub) Err() <-chan error { return h.errc }

// Close stops the hub: long-lived streams are told to end, in-flight RPCs get ShutdownGrace to finish, then the
// compile loop stops (resigning leadership), then etcd. Safe to call more than once.
func (h *Hub) Close() {
	h.closeOnce.Do(func() {
		close(h.stopping)
		if h.grpc != nil {
			done := make(chan struct{})
			go func() { h.grpc.GracefulStop(); close(done) }()
			select {
			case <-done:
			case <-time.After(h.grace):
				h.log.Warn("graceful stop timed out; closing remaining streams", "grace", h.grace)
				h.grpc.Stop()
				<-done
			}
		}
		if h.cancel != nil {
			h.cancel()
		}
		h.wg.Wait()
		if h.cli != nil {
			_ = h.cli.Close()
		}
		if h.etcd != nil {
			h.etcd.Close()
		}
		h.log.Info("hub stopped")
	})
}

// Run starts a hub and serves until ctx ends or a component fails, then shuts down gracefully.
func Run(ctx context.Context, cfg Config) error {
	h, err := Start(ctx, cfg)
	if err != nil {
		return err
	}
	defer h.Close()
	select {
	case <-ctx.Done():
		return nil
	case err := <-h.Err():
		return err
	}
}
