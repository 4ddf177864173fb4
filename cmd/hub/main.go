// Command hub runs the fedgate hub: etcd (embedded by default), the compile loop and the gRPC API that hubctl and
// spoke agents talk to. All wiring lives in hub/server; this file only turns flags into a server.Config.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/fedgate/fedgate/hub/server"
	"github.com/fedgate/fedgate/internal/version"
)

func main() {
	os.Exit(realMain(os.Args[1:]))
}

// realMain runs the hub and returns its exit code: 0 also for -h (the usage was asked for, and printed) and --version.
func realMain(args []string) int {
	err := run(args)
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return 0
	}
	fmt.Fprintln(os.Stderr, "hub:", err)
	return 1
}

// errVersion is parseFlags' answer to --version, as flag.ErrHelp is to -h.
var errVersion = errors.New("version requested")

func run(args []string) error {
	cfg, logLevel, err := parseFlags(args)
	if errors.Is(err, errVersion) {
		fmt.Fprintln(os.Stdout, version.String("hub"))
		return nil
	}
	if err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(logLevel)); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", logLevel)
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("app", "hub")
	// controller-runtime (the hub-cluster mirror) logs through logr: into the hub's log, not a stack trace at exit
	// saying its logger was never set.
	ctrllog.SetLogger(logr.FromSlogHandler(cfg.Logger.Handler()))
	cfg.Logger.Info("starting", "version", version.Version(), "revision", version.Revision())

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return server.Run(ctx, cfg)
}

// defaultAdminConfig is ~/.fedgate/config, where hubctl looks by default.
func defaultAdminConfig() string {
	home, err := os.UserHomeDir()
	if err != nil {
		return ""
	}
	return filepath.Join(home, ".fedgate", "config")
}

func parseFlags(args []string) (server.Config, string, error) {
	cfg := server.DefaultConfig()
	fs := flag.NewFlagSet("hub", flag.ContinueOnError)
	fs.StringVar(&cfg.Listen, "listen", cfg.Listen, "gRPC listen address for hubctl and spokes (TLS only; spokes and admins use mTLS)")
	fs.StringVar(&cfg.AdvertiseAddress, "advertise-address", cfg.AdvertiseAddress, "host:port spokes and hubctl dial, put in join commands and the serving certificate (default: --listen)")
	fs.StringVar(&cfg.PKIDir, "pki-dir", cfg.PKIDir, "directory of the hub CA, created on first start (default: <data-dir>/pki)")
	fs.StringVar(&cfg.CACert, "ca-cert", cfg.CACert, "load the CA certificate (bundle, active first) from this file instead of --pki-dir; replicas sharing an etcd must all use the same CA")
	fs.StringVar(&cfg.CAKey, "ca-key", cfg.CAKey, "the CA key for --ca-cert")
	fs.DurationVar(&cfg.CertTTL, "cert-ttl", cfg.CertTTL, "lifetime of cluster certificates (spokes renew at two thirds)")
	fs.StringVar(&cfg.AdminConfig, "admin-config", defaultAdminConfig(), "where the bootstrap writes the admin credential for hubctl, if absent (empty: none)")
	fs.StringVar(&cfg.AdminSecret, "admin-secret", cfg.AdminSecret, "with --in-cluster or --kubeconfig: NAMESPACE/NAME of a Secret of the hub cluster where the hub keeps an admin credential for hubctl (key config), if absent")
	fs.DurationVar(&cfg.HandshakeTimeout, "handshake-timeout", cfg.HandshakeTimeout, "bound on a connection's TLS handshake")
	fs.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "embedded etcd data directory (state survives restarts)")
	endpoints := fs.String("etcd-endpoints", strings.Join(cfg.EtcdEndpoints, ","), "comma-separated external etcd endpoints; empty runs an embedded etcd")
	fs.StringVar(&cfg.EtcdCA, "etcd-ca", cfg.EtcdCA, "CA file that verifies the external etcd's serving certificates (needed for https:// --etcd-endpoints)")
	fs.StringVar(&cfg.EtcdCert, "etcd-cert", cfg.EtcdCert, "client certificate file for an external etcd that checks client certificates (with --etcd-key)")
	fs.StringVar(&cfg.EtcdKey, "etcd-key", cfg.EtcdKey, "key file of --etcd-cert")
	fs.BoolVar(&cfg.EtcdAllowPlaintext, "etcd-allow-plaintext", cfg.EtcdAllowPlaintext, "accept http:// --etcd-endpoints, which anyone on the path to etcd reads and writes: for a throwaway test etcd only")
	fs.StringVar(&cfg.KeyEncryptionKeyFile, "key-encryption-key-file", cfg.KeyEncryptionKeyFile, "keys sealing the session and gossip key rings in etcd, one base64 32-byte key per line, the first sealing; the same file on every hub sharing an etcd, required with --etcd-endpoints (default: <data-dir>/key-encryption-key, made on first start)")
	fs.IntVar(&cfg.EtcdMaxTxnOps, "etcd-max-txn-ops", cfg.EtcdMaxTxnOps, "operations the external etcd allows per transaction (its --max-txn-ops); larger non-atomic writes are chunked to it")
	fs.IntVar(&cfg.EtcdClientPort, "etcd-client-port", cfg.EtcdClientPort, "embedded etcd client port on 127.0.0.1 (0: a free port)")
	fs.IntVar(&cfg.EtcdPeerPort, "etcd-peer-port", cfg.EtcdPeerPort, "embedded etcd peer port on 127.0.0.1 (0: a free port)")
	fs.StringVar(&cfg.EtcdLogLevel, "etcd-log-level", cfg.EtcdLogLevel, "embedded etcd's own log level (debug, info, warn, error); empty silences it")
	fs.DurationVar(&cfg.CompileHoldOff, "compile-holdoff", cfg.CompileHoldOff, "wait this long after a change for more before compiling")
	fs.DurationVar(&cfg.CompileMaxDelay, "compile-max-delay", cfg.CompileMaxDelay, "longest a stream of changes can postpone a compile")
	fs.DurationVar(&cfg.ShutdownGrace, "shutdown-grace", cfg.ShutdownGrace, "how long shutdown waits for in-flight RPCs")
	fs.DurationVar(&cfg.KeyRotation, "key-rotation", cfg.KeyRotation, "how often session and gossip keys are replaced (the previous key stays valid one more period)")
	fs.StringVar(&cfg.Kubeconfig, "kubeconfig", cfg.Kubeconfig, "kubeconfig of a hub cluster whose Gateway API objects the hub mirrors (status and ManagedClusters are written back)")
	fs.BoolVar(&cfg.InCluster, "in-cluster", cfg.InCluster, "use the pod's service account to reach the hub cluster")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return cfg, "", err
	}
	if *showVersion {
		return cfg, "", errVersion
	}
	if fs.NArg() > 0 {
		return cfg, "", fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	cfg.EtcdEndpoints = nil
	for _, e := range strings.Split(*endpoints, ",") {
		if e = strings.TrimSpace(e); e != "" {
			cfg.EtcdEndpoints = append(cfg.EtcdEndpoints, e)
		}
	}
	if err := cfg.Validate(); err != nil {
		return cfg, "", err
	}
	return cfg, *logLevel, nil
}
