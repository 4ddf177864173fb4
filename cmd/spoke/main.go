// Command spoke runs fedgate's per-cluster agent: it reports the cluster's local objects to the hub, applies the
// hub's routing projection to the embedded proxy, and serves east-west traffic for other clusters.
//
// With --static-config it runs the proxy alone from a SpokeConfig JSON file, without a hub (benchmarks, debugging).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/fedgate/fedgate/apis/spokeconfig"
	"github.com/fedgate/fedgate/spoke/proxy"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "spoke:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("spoke", flag.ContinueOnError)
	staticConfig := fs.String("static-config", "", "serve this SpokeConfig JSON file without a hub")
	cluster := fs.String("cluster", "", "name of this spoke's cluster")
	listenHost := fs.String("listen-host", "", "bind address of every gateway port (e.g. 127.0.0.2 so several spokes share one host)")
	portOffset := fs.Int("port-offset", 0, "added to every gateway listener port")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(log)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if *staticConfig == "" {
		return errors.New("--static-config is required")
	}
	return runStatic(ctx, log, *staticConfig, *cluster, *listenHost, int32(*portOffset))
}

// runStatic serves one SpokeConfig file until ctx ends.
func runStatic(ctx context.Context, log *slog.Logger, path, cluster, listenHost string, portOffset int32) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("--static-config: %w", err)
	}
	cfg, err := spokeconfig.Decode(b)
	if err != nil {
		return fmt.Errorf("--static-config %s: %w", path, err)
	}
	if cluster == "" {
		cluster = cfg.Cluster
	}
	srv := proxy.New(proxy.Options{Cluster: cluster, ListenHost: listenHost, PortOffset: portOffset})
	if err := srv.Apply(cfg); err != nil {
		_ = srv.Close()
		return fmt.Errorf("--static-config %s: apply: %w", path, err)
	}
	log.Info("serving static config", "file", path, "cluster", cluster, "revision", cfg.Revision, "ports", len(cfg.Ports))
	<-ctx.Done()
	log.Info("shutting down")
	return srv.Close()
}
