package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/hub/controller"
	"github.com/fedgate/fedgate/hub/store"
)

// Config is everything a hub process needs. Each documented default is what DefaultConfig returns (a test holds the
// two together) and what cmd/hub's flags default to.
type Config struct {
	// Listen is the gRPC address for hubctl and spokes (plaintext for now). Default: `127.0.0.1:9443`.
	Listen string
	// DataDir is the embedded etcd's data directory; state survives restarts on the same directory. Unused with
	// EtcdEndpoints. Default: `./fedgate-data`.
	DataDir string
	// EtcdEndpoints, when set, use an external etcd cluster instead of the embedded one (several hubs may share it;
	// one compiles at a time). Default: `` (embedded).
	EtcdEndpoints []string
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
	// Logger for the hub; nil discards logs.
	Logger *slog.Logger
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{
		Listen:          "127.0.0.1:9443",
		DataDir:         "./fedgate-data",
		CompileHoldOff:  controller.DefaultHoldOff,
		CompileMaxDelay: controller.DefaultMaxDelay,
		ShutdownGrace:   5 * time.Second,
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
	if c.EtcdClientPort != 0 && c.EtcdClientPort == c.EtcdPeerPort {
		errs = append(errs, fmt.Errorf("etcd-client-port and etcd-peer-port are both %d", c.EtcdClientPort))
	}
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
// above gRPC's 4 MiB default; configs sent down can be larger still.
const (
	MaxRecvMsgSize       = 16 << 20
	MaxSendMsgSize       = 64 << 20
	MaxConcurrentStreams = 1024
)

// ServerOptions are the hub's gRPC server options: message and stream limits, and keepalives that notice a dead spoke
// (so its presence lapses) while refusing clients that ping abusively.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(MaxRecvMsgSize),
		grpc.MaxSendMsgSize(MaxSendMsgSize),
		grpc.MaxConcurrentStreams(MaxConcurrentStreams),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	}
}

// Hub is a running hub: etcd (embedded or a client of an external one), the compile loop and the gRPC server.
type Hub struct {
	addr       net.Addr
	store      *store.Store
	controller *controller.Controller
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
	h := &Hub{stopping: make(chan struct{}), grace: cfg.ShutdownGrace, log: log, errc: make(chan error, 3)}
	defer func() {
		if err != nil {
			h.Close()
		}
	}()

	endpoints := cfg.EtcdEndpoints
	opts := store.Options{Logger: log.With("component", "store")}
	if len(endpoints) == 0 {
		h.etcd, err = store.StartEmbedded(ctx, store.EmbeddedConfig{
			DataDir: cfg.DataDir, ClientPort: cfg.EtcdClientPort, PeerPort: cfg.EtcdPeerPort, LogLevel: cfg.EtcdLogLevel,
		})
		if err != nil {
			return nil, err
		}
		endpoints = h.etcd.Endpoints()
		opts.MaxTxnOps, opts.MaxRequestBytes = store.EmbeddedMaxTxnOps, store.EmbeddedMaxRequestBytes
		log.Info("embedded etcd started", "dataDir", cfg.DataDir, "endpoints", endpoints)
	}
	h.cli, err = store.Connect(ctx, endpoints)
	if err != nil {
		return nil, err
	}
	// clientv3.New does not dial eagerly: fail start-up here, with the endpoints named, rather than on the first RPC.
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	_, err = h.cli.Get(pctx, store.Prefix, clientv3.WithCountOnly(), clientv3.WithPrefix())
	cancel()
	if err != nil {
		return nil, fmt.Errorf("etcd %v unreachable: %w", endpoints, err)
	}
	h.store = store.New(h.cli, opts)
	h.controller = controller.New(h.store, controller.Config{
		HoldOff: cfg.CompileHoldOff, MaxDelay: cfg.CompileMaxDelay, Logger: log,
	})

	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	h.addr = lis.Addr()
	h.grpc = grpc.NewServer(ServerOptions()...)
	fedgatepb.RegisterAdminServer(h.grpc, NewAdminService(h.store, log))
	fedgatepb.RegisterSyncServer(h.grpc, NewSyncService(h.store, log, h.stopping))

	runCtx, cancelRun := context.WithCancel(context.WithoutCancel(ctx))
	h.cancel = cancelRun
	h.wg.Add(2)
	go func() {
		defer h.wg.Done()
		_ = h.controller.Run(runCtx) // returns only when runCtx ends
	}()
	go func() {
		defer h.wg.Done()
		if err := h.grpc.Serve(lis); err != nil {
			h.errc <- fmt.Errorf("grpc server: %w", err)
		}
	}()
	if h.etcd != nil {
		go func() {
			if err, ok := <-h.etcd.Err(); ok && err != nil {
				h.errc <- fmt.Errorf("embedded etcd: %w", err)
			}
		}()
	}
	log.Info("hub serving", "listen", h.addr.String())
	return h, nil
}

// Addr is the address the gRPC server listens on (the real port when Listen asked for 0).
func (h *Hub) Addr() net.Addr { return h.addr }

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
