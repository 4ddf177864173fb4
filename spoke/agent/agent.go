// Package agent wires a spoke together: source → reporter → hub, hub → subscriber → proxy (with the disk cache), and
// the east-west listener other spokes forward to. It owns process-level concerns (listeners, the hub connection,
// shutdown order, which duties need leadership) and no protocol logic of its own. Run is usable in-process, which is
// how end-to-end tests start spokes.
//
// A cluster may run several replicas. With an Elector, only the leader runs the cluster-wide duties (source, Report
// stream, status writer); every replica subscribes, serves traffic and gossips under its own member name. The TLS
// Secrets the proxy serves are read on every replica (Config.SecretReader), since every replica serves; only the
// leader's Source reports them, without their data.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	grpccreds "google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/apis/spokeconfig"
	"github.com/fedgate/fedgate/spoke/internal/retry"
	"github.com/fedgate/fedgate/spoke/proxy"
	"github.com/fedgate/fedgate/spoke/reporter"
	"github.com/fedgate/fedgate/spoke/source"
	"github.com/fedgate/fedgate/spoke/subscriber"
	"github.com/fedgate/fedgate/spoke/tlssecrets"
)

// Proxy is what the agent needs from the embedded proxy; *proxy.Server implements it.
type Proxy interface {
	Apply(*spokeconfig.SpokeConfig) error
	// Reload rebuilds the table from the last applied config: a local certificate's Secret changed.
	Reload() error
	ServeEastWest(net.Listener) error
	Close() error
}

// secretReloadDelay: after a change of a local TLS Secret's data, the agent waits this long (collecting further
// changes, without extending the wait) before it reloads the proxy, so that a burst of Secret updates (a certificate
// manager renewing several) costs one table build.
const secretReloadDelay = 200 * time.Millisecond

var _ Proxy = (*proxy.Server)(nil)

// statusTee hands every config the proxy accepted to the status writer as well.
type statusTee struct {
	Proxy
	w StatusWriter
}

func (t statusTee) Apply(cfg *spokeconfig.SpokeConfig) error {
	if err := t.Proxy.Apply(cfg); err != nil {
		return err
	}
	t.w.Offer(cfg)
	return nil
}

// Agent is one running spoke.
type Agent struct {
	cfg       Config
	log       *slog.Logger
	proxy     Proxy
	eastWest  net.Listener
	advertise string
	sub       *subscriber.Subscriber
	conn      *grpc.ClientConn // nil without a hub
	repOpts   reporter.Options
	streams   *countingSync // nil without a hub
	leading   atomic.Bool   // the cluster-wide duties are running
	secrets   *tlssecrets.Store
}

// New validates cfg and binds the east-west listener, so callers learn the advertised address (and port conflicts)
// before Run. Run must follow: it releases what New acquired. The hub connection is lazy and is not attempted yet.
func New(cfg Config) (*Agent, error) {
	cfg = cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("spoke config: %w", err)
	}
	log := cfg.Log.With("cluster", cfg.Cluster)
	l, err := net.Listen("tcp", cfg.EastWestListen)
	if err != nil {
		return nil, fmt.Errorf("east-west listener: %w", err)
	}
	advertise := cfg.EastWestAddress
	if advertise == "" {
		advertise = l.Addr().String()
		if ip := l.Addr().(*net.TCPAddr).IP; ip.IsUnspecified() {
			log.Warn("east-west listener binds every address and no east-west address is set; other spokes cannot reach "+
				"this one until --east-west-address names a reachable host", "advertised", advertise)
		}
	}
	secrets := cfg.TLSSecrets
	if secrets == nil {
		secrets = tlssecrets.New()
	}
	p := cfg.Proxy
	if p == nil {
		po := proxy.Options{Cluster: cfg.Cluster, ListenHost: cfg.ListenHost, PortOffset: cfg.PortOffset,
			DrainTimeout: cfg.DrainTimeout, Limits: cfg.Limits, HealthCheck: cfg.HealthCheck, LocalSecret: secrets.Lookup}
		if cfg.Credentials != nil {
			// East-west is mTLS with the hub-issued identities: only clusters joined to the same hub get in, and this
			// spoke only talks to a listener presenting the identity of the very cluster it dialled.
			po.EastWestServerTLS = cfg.Credentials.EastWestServerTLS()
			po.EastWestClientTLSFor = cfg.Credentials.EastWestClientTLS
		}
		if cfg.GossipListen != "" {
			po.Gossip = &proxy.GossipOptions{BindAddr: cfg.GossipListen, Replica: cfg.ReplicaName, EastWestAddress: advertise}
			if g := cfg.gossipAdvertised(); g != "" {
				if h, _, _ := net.SplitHostPort(g); net.ParseIP(h) != nil {
					po.Gossip.AdvertiseAddr = g // memberlist advertises IPs only; a DNS name is for the hub's peer lists
				}
			}
		}
		p = proxy.New(po)
	}
	if cfg.GossipListen != "" && cfg.gossipAdvertised() == "" {
		log.Warn("gossip listener binds every address and no gossip address is set; spokes of other clusters cannot "+
			"join this one until --gossip-address names a reachable host (in a pod: its IP)", "listen", cfg.GossipListen)
	}
	a := &Agent{cfg: cfg, log: log, proxy: p, eastWest: l, advertise: advertise, secrets: secrets}
	var client fedgatepb.SyncClient
	if cfg.HubAddress != "" {
		target, opts := hubTarget(cfg.hubAddresses())
		if a.conn, err = grpc.NewClient(target, append(dialOptions(cfg), opts...)...); err != nil {
			_ = l.Close()
			return nil, fmt.Errorf("hub %s: %w", cfg.HubAddress, err)
		}
		a.streams = &countingSync{SyncClient: fedgatepb.NewSyncClient(a.conn), log: log}
		client = a.streams
		a.repOpts = reporter.Options{Client: client, Hello: a.hello(), MinBackoff: cfg.MinBackoff, MaxBackoff: cfg.MaxBackoff, Log: log}
		if _, err = reporter.New(a.repOpts); err != nil {
			_ = a.conn.Close()
			_ = l.Close()
			return nil, err
		}
	}
	var applier subscriber.Applier = p
	if cfg.StatusWriter != nil {
		applier = statusTee{Proxy: p, w: cfg.StatusWriter}
	}
	a.sub, err = subscriber.New(subscriber.Options{
		Client: client, Hello: a.hello(), Applier: applier, CacheDir: cfg.CacheDir,
		MinBackoff: cfg.MinBackoff, MaxBackoff: cfg.MaxBackoff, Log: log,
	})
	if err != nil {
		if a.conn != nil {
			_ = a.conn.Close()
		}
		_ = l.Close()
		return nil, err
	}
	return a, nil
}

// EastWestAddress is the address advertised to the hub for this spoke's east-west listener.
func (a *Agent) EastWestAddress() string { return a.advertise }

// StreamStarts returns how many times the Report and Subscribe streams to the hub were opened: 1 each while the
// connection holds (a certificate renewal must not change them), more after reconnects.
func (a *Agent) StreamStarts() (report, subscribe int64) {
	if a.streams == nil {
		return 0, 0
	}
	return a.streams.reports.Load(), a.streams.subscribes.Load()
}

// Applied returns the graph revision and config hash serving now.
func (a *Agent) Applied() (revision int64, hash string) { return a.sub.Applied() }

// Leading reports whether this replica runs the cluster-wide duties now (always, once started, without an Elector).
func (a *Agent) Leading() bool { return a.leading.Load() }

func (a *Agent) hello() *fedgatepb.Hello {
	return &fedgatepb.Hello{
		Cluster: a.cfg.Cluster, AgentVersion: a.cfg.AgentVersion, EastWestAddress: a.advertise, Labels: a.cfg.Labels,
		GossipAddress: a.cfg.gossipAdvertised(), GatewayAddresses: a.cfg.GatewayAddresses,
	}
}

// Run builds an Agent from cfg and runs it until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	a, err := New(cfg)
	if err != nil {
		return err
	}
	return a.Run(ctx)
}

// Run serves until ctx ends, then shuts down: streams to the hub first, then the proxy (in-flight requests finish).
// It returns nil on a clean shutdown and an error when a component fails for good (e.g. the source directory is gone
// at start).
func (a *Agent) Run(ctx context.Context) error {
	log := a.log
	// What the proxy's first build (the cache's) reads of the local TLS Secrets: any change from here on reloads it.
	servedSecrets := a.secrets.DataGeneration()
	// The cache goes live before anything touches the network: a spoke restarted while the hub is down serves at once.
	if ok, err := a.sub.LoadCache(); err != nil {
		log.Error("ignoring config cache; waiting for the hub", "err", err)
	} else if !ok && a.cfg.CacheDir != "" {
		log.Info("no config cache yet", "dir", a.cfg.CacheDir)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	var errMu sync.Mutex
	var firstErr error
	fail := func(name string, err error) {
		errMu.Lock()
		if firstErr == nil {
			firstErr = fmt.Errorf("%s: %w", name, err)
		}
		errMu.Unlock()
		cancel()
	}
	// goRun runs a component; its failure stops the agent, its clean return (ctx ended) does not.
	goRun := func(name string, f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil && ctx.Err() == nil {
				fail(name, err)
			}
		}()
	}

	// Not in wg: it returns only once the proxy is closed, which happens after wg.Wait.
	ewDone := make(chan struct{})
	go func() {
		defer close(ewDone)
		if err := a.proxy.ServeEastWest(a.eastWest); err != nil && ctx.Err() == nil {
			fail("east-west listener", err)
		}
	}()
	log.Info("east-west listening", "listen", a.eastWest.Addr().String(), "advertised", a.advertise)

	// On every replica, with or without a hub (a cached config may name local certificates): see Config.SecretReader.
	if a.cfg.SecretReader != nil {
		goRun("TLS secret reader", func() error { return a.cfg.SecretReader.Run(ctx) })
	}
	goRun("TLS secret reload", func() error { a.reloadOnSecretChange(ctx, servedSecrets); return nil })

	if a.conn != nil {
		src := a.cfg.Source
		if src == nil && a.cfg.SourceDir != "" {
			src = &source.Dir{Path: a.cfg.SourceDir, TLSSecrets: a.secrets, Log: log}
		}
		if src == nil {
			src = source.Static{}
		}
		if a.cfg.Elector == nil {
			goRun("duties", func() error { a.runDuties(ctx, src, fail); return nil })
		} else {
			goRun("leader election", func() error {
				return a.cfg.Elector.Run(ctx, func(term context.Context) { a.runDuties(term, src, fail) })
			})
		}
		goRun("subscriber", func() error { return a.sub.Run(ctx) })
		// Renewal rides on the same connection as the streams: the new certificate serves the next handshake, and the
		// open streams never notice.
		wg.Add(1)
		go func() {
			defer wg.Done()
			if a.cfg.Credentials == nil {
				return // plaintextHub tests
			}
			a.cfg.Credentials.RunRenewal(ctx, fedgatepb.NewRegistrationClient(a.conn), log.With("component", "credentials"))
		}()
		log.Info("connecting to hub", "hub", a.cfg.HubAddress)
	} else {
		log.Warn("no hub address: serving the cached config only")
	}

	<-ctx.Done()
	log.Info("shutting down")
	// The proxy drains (bounded by its drain timeout) while the other components stop, so the whole shutdown takes
	// no longer than the drain.
	perrc := make(chan error, 1)
	go func() { perrc <- a.proxy.Close() }()
	cancel()
	wg.Wait()
	if a.conn != nil {
		_ = a.conn.Close()
	}
	perr := <-perrc
	_ = a.eastWest.Close() // in case the proxy never took it
	<-ewDone
	errMu.Lock()
	defer errMu.Unlock()
	if removed := (*retry.RemovedError)(nil); errors.As(firstErr, &removed) {
		return a.removed(removed)
	}
	return errors.Join(firstErr, perr)
}

// reloadOnSecretChange reloads the proxy, debounced by secretReloadDelay, whenever the data of a local TLS Secret
// changes from served on, until ctx ends. A failed reload is logged: the proxy keeps its table, and the next change
// retries.
func (a *Agent) reloadOnSecretChange(ctx context.Context, served uint64) {
	for {
		changed := a.secrets.Changed()
		if a.secrets.DataGeneration() == served {
			select {
			case <-ctx.Done():
				return
			case <-changed:
				continue
			}
		}
		t := time.NewTimer(secretReloadDelay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		served = a.secrets.DataGeneration()
		if err := a.proxy.Reload(); err != nil {
			a.log.Error("reloading the proxy for a changed TLS Secret; the previous table keeps serving", "err", err)
			continue
		}
		a.log.Info("reloaded the proxy: a local TLS Secret changed", "secrets", len(a.secrets.Refs()))
	}
}

// cleanupTimeout bounds the cleanup of a removed cluster.
const cleanupTimeout = time.Minute

// removed runs Cleanup for a cluster the hub removed and returns the error the agent exits with.
func (a *Agent) removed(removed *retry.RemovedError) error {
	if a.cfg.Cleanup == nil {
		return fmt.Errorf("cluster %q was removed at the hub; this agent stops (uninstall it, or join the cluster again): %w", removed.Cluster, removed.Err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	if err := a.cfg.Cleanup(ctx); err != nil {
		a.log.Error("cleaning up after the cluster's removal", "err", err)
		return fmt.Errorf("cluster %q was removed at the hub; cleaning up what fedgate wrote in this cluster failed (%v); "+
			"this agent stops (uninstall it, or join the cluster again): %w", removed.Cluster, err, removed.Err)
	}
	a.log.Info("cluster removed at the hub: took back the ServiceImports, statuses and credentials fedgate wrote in this cluster", "cluster", removed.Cluster)
	return fmt.Errorf("cluster %q was removed at the hub; what fedgate wrote in this cluster is cleaned up, "+
		"and this agent stops (uninstall it, or join the cluster again): %w", removed.Cluster, removed.Err)
}

// runDuties runs the cluster-wide duties — the source, the Report stream it feeds, the status writer — until ctx ends
// (the agent stops, or this replica's leadership ends) and all three have returned. A duty that fails while ctx lasts
// fails the agent. Each run gets a fresh reporter, so a new term reports the cluster as it is now, never the snapshot
// an earlier term left behind.
func (a *Agent) runDuties(ctx context.Context, src source.Source, fail func(string, error)) {
	rep, err := reporter.New(a.repOpts)
	if err != nil { // New checked these options
		fail("reporter", err)
		return
	}
	a.leading.Store(true)
	defer a.leading.Store(false)
	var wg sync.WaitGroup
	run := func(name string, f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil && ctx.Err() == nil {
				fail(name, err)
			}
		}()
	}
	run("source", func() error { return src.Run(ctx, rep.Update) })
	if a.cfg.StatusWriter != nil {
		run("status writer", func() error { return a.cfg.StatusWriter.Run(ctx) })
	}
	run("reporter", func() error { return rep.Run(ctx) })
	wg.Wait()
}

// dialOptions is the one place the hub connection is configured: mTLS with the cluster's current certificate (read
// at each handshake, so a renewed one is used from the next reconnect on).
func dialOptions(cfg Config) []grpc.DialOption {
	transport := grpc.WithTransportCredentials(insecure.NewCredentials())
	if !cfg.plaintextHub {
		transport = grpc.WithTransportCredentials(grpccreds.NewTLS(cfg.Credentials.HubClientTLS()))
	}
	return []grpc.DialOption{
		transport,
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:                cfg.KeepaliveTime,
			Timeout:             cfg.KeepaliveTimeout,
			PermitWithoutStream: true,
		}),
		// A large fleet's projection can exceed grpc's 4 MiB default; the hub sends nothing larger than this.
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(spokeconfig.MaxUpdateBytes)),
	}
}

// hubTarget is the gRPC target of the hub and the options it needs. One address is dialled as it is; the replicas of
// an HA hub are handed to gRPC as one endpoint each, with pick_first over a shuffled list: both streams and renewals
// share one connection to one replica (spokes spread over the replicas), and when it breaks the next call connects to
// the first replica that answers. Every replica serves every cluster (they share etcd), so which one is reached
// does not matter.
func hubTarget(addrs []string) (string, []grpc.DialOption) {
	if len(addrs) == 1 {
		return addrs[0], nil
	}
	r := manual.NewBuilderWithScheme("fedgate-hub")
	eps := make([]resolver.Endpoint, len(addrs))
	for i, a := range addrs {
		eps[i] = resolver.Endpoint{Addresses: []resolver.Address{{Addr: a}}}
	}
	r.InitialState(resolver.State{Endpoints: eps})
	// The path becomes the connection's authority: the first replica, as a single address would be.
	return r.Scheme() + ":///" + addrs[0], []grpc.DialOption{
		grpc.WithResolvers(r),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"pick_first":{"shuffleAddressList":true}}]}`),
	}
}

// countingSync counts stream openings to the hub (StreamStarts) and logs each, so a restart is visible in tests and
// in the logs.
type countingSync struct {
	fedgatepb.SyncClient
	log                 *slog.Logger
	reports, subscribes atomic.Int64
}

func (c *countingSync) Report(ctx context.Context, opts ...grpc.CallOption) (fedgatepb.Sync_ReportClient, error) {
	c.log.Info("hub stream opened", "stream", "report", "starts", c.reports.Add(1))
	return c.SyncClient.Report(ctx, opts...)
}

func (c *countingSync) Subscribe(ctx context.Context, opts ...grpc.CallOption) (fedgatepb.Sync_SubscribeClient, error) {
	c.log.Info("hub stream opened", "stream", "subscribe", "starts", c.subscribes.Add(1))
	return c.SyncClient.Subscribe(ctx, opts...)
}
