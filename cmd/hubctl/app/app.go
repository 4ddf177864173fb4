// Package app is hubctl: the admin command line of the fedgate hub, a client of the hub's Admin gRPC API
// (fedgatepb.AdminClient). It applies and deletes Gateway API objects at the hub — checking them locally first with
// hub/validation so that a mistake is named before anything is sent — and lists objects and clusters with their
// compiled status, in kubectl's formats.
//
// All of it sits behind Run so that tests drive the real commands against an in-process server. The package holds no
// state between runs and never talks to anything but the one hub address it is given.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/fedgate/fedgate/apis/clientconfig"
	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/internal/version"
)

// Defaults and environment.
const (
	// EnvHub overrides the admin config's hub address; --hub overrides both.
	EnvHub = "FEDGATE_HUB"
	// EnvConfig names the admin config file; --config overrides it. Default: ~/.fedgate/config.
	EnvConfig = "FEDGATE_CONFIG"
)

// globalOptions are the flags every command shares.
type globalOptions struct {
	hub     string
	config  string
	timeout time.Duration

	stdin          io.Reader
	stdout, stderr io.Writer
}

// Run executes hubctl with args (without the program name) and returns the process exit code: 0 on success, 1 on
// any error, with the error on stderr.
func Run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	g := &globalOptions{stdin: stdin, stdout: stdout, stderr: stderr}
	root := newRootCommand(g)
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	if err := root.Execute(); err != nil {
		printError(stderr, err)
		return 1
	}
	return 0
}

func newRootCommand(g *globalOptions) *cobra.Command {
	defaultConfig := os.Getenv(EnvConfig)
	if defaultConfig == "" {
		if home, err := os.UserHomeDir(); err == nil {
			defaultConfig = filepath.Join(home, ".fedgate", "config")
		}
	}
	root := &cobra.Command{
		Use:   "hubctl",
		Short: "Administer a fedgate hub: apply Gateway API objects once, for every cluster",
		// Errors are printed once, by Run, in kubectl's "error: ..." form; usage only on flag mistakes.
		SilenceErrors: true,
		SilenceUsage:  true,
		Version:       version.String("hubctl"),
	}
	root.SetVersionTemplate("{{.Version}}\n")
	root.PersistentFlags().StringVar(&g.hub, "hub", os.Getenv(EnvHub), "hub address host:port (env "+EnvHub+"; default: the admin config's)")
	root.PersistentFlags().StringVar(&g.config, "config", defaultConfig, "admin credential written by the hub's bootstrap (env "+EnvConfig+")")
	root.PersistentFlags().DurationVar(&g.timeout, "timeout", 30*time.Second, "give up on the hub after this long")
	root.AddCommand(newApplyCommand(g), newDeleteCommand(g), newGetCommand(g), newTokenCommand(g), newJoinCommand(g), newClusterCommand(g))
	return root
}

// connect dials the hub's Admin API over mTLS with the admin credential. Every admin command dials through here;
// without a credential nothing is sent (the hub would refuse it anyway).
func connect(g *globalOptions) (fedgatepb.AdminClient, func(), error) {
	if g.config == "" {
		return nil, nil, errors.New("no admin config: pass --config or set " + EnvConfig)
	}
	cc, err := clientconfig.Load(g.config)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("no admin credential at %s: the hub writes one on first start (its --admin-config); "+
			"copy it here, or pass --config / set %s", g.config, EnvConfig)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("admin config: %w", err)
	}
	tc, err := cc.TLS()
	if err != nil {
		return nil, nil, fmt.Errorf("admin config %s: %w", g.config, err)
	}
	if g.hub == "" {
		g.hub = cc.Hub
	}
	conn, err := grpc.NewClient(g.hub, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		return nil, nil, fmt.Errorf("hub address %q: %w", g.hub, err)
	}
	return fedgatepb.NewAdminClient(conn), func() { _ = conn.Close() }, nil
}

// call runs one RPC with the command's deadline and turns a gRPC status into a plain error whose text is the hub's
// message (not a Go struct dump), prefixed where the code adds information the message lacks.
func call[Req, Resp any](ctx context.Context, g *globalOptions, rpc func(context.Context, Req, ...grpc.CallOption) (Resp, error), req Req) (Resp, error) {
	ctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	resp, err := rpc(ctx, req)
	if err != nil {
		return resp, hubError(g.hub, err)
	}
	return resp, nil
}

func hubError(addr string, err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	switch st.Code() {
	case codes.Unavailable:
		return fmt.Errorf("cannot reach the hub at %s: %s", addr, st.Message())
	case codes.DeadlineExceeded:
		return fmt.Errorf("the hub at %s did not answer in time: %s", addr, st.Message())
	case codes.Unauthenticated, codes.PermissionDenied:
		return fmt.Errorf("the hub at %s refused this client: %s", addr, st.Message())
	case codes.Unimplemented:
		return fmt.Errorf("the hub at %s does not support this command (older hub?): %s", addr, st.Message())
	}
	return errors.New(st.Message())
}

// printError writes err in kubectl's "error: ..." form. Several errors (errors.Join) each get a line.
func printError(w io.Writer, err error) {
	// Only a join at the top level is split: a wrapped one keeps its prefix.
	if multi, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range multi.Unwrap() {
			printError(w, e)
		}
		return
	}
	msg := strings.TrimRight(err.Error(), "\n")
	fmt.Fprintf(w, "error: %s\n", msg)
}
