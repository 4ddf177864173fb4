package app

import (
	"context"
	"crypto/tls"
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/fedgate/fedgate/apis/fedgatepb"
	"github.com/fedgate/fedgate/hub/pki"
	"github.com/fedgate/fedgate/internal/version"
)

func TestVersionAndHelp(t *testing.T) {
	stdout, stderr, code := hubctl(t, "", "--version")
	if code != 0 || stdout != version.String("hubctl")+"\n" || stderr != "" {
		t.Errorf("hubctl --version: exit %d, stdout %q, stderr %q; want %q", code, stdout, stderr, version.String("hubctl"))
	}
	for _, args := range [][]string{{"-h"}, {"--help"}, {"join", "-h"}, {"token", "create", "--help"}} {
		stdout, stderr, code := hubctl(t, "", args...)
		if code != 0 || !strings.Contains(stdout, "Usage:") || stderr != "" {
			t.Errorf("hubctl %s: exit %d, stdout %q, stderr %q", strings.Join(args, " "), code, stdout, stderr)
		}
	}
}

// Every flag's value placeholder in the help is its type (or a deliberate upper-case word): pflag, like flag, takes a
// backquoted word of the usage string as the placeholder.
func TestFlagPlaceholders(t *testing.T) {
	upper := regexp.MustCompile(`^[A-Z][A-Z0-9_:.-]*$`)
	checked := 0
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, fs := range []*pflag.FlagSet{c.LocalFlags(), c.PersistentFlags()} {
			fs.VisitAll(func(f *pflag.Flag) {
				checked++
				got, _ := pflag.UnquoteUsage(f)
				plain := *f
				plain.Usage = strings.ReplaceAll(f.Usage, "`", "")
				want, _ := pflag.UnquoteUsage(&plain)
				if got != want && !upper.MatchString(got) {
					t.Errorf("%s --%s shows the placeholder %q: a backquoted phrase in its usage string?", c.CommandPath(), f.Name, got)
				}
			})
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(newRootCommand(&globalOptions{}))
	if checked < 20 {
		t.Fatalf("checked %d flags", checked)
	}
}

// CreateToken answers as the hub does: the token, and the join command naming the hub, token, CA hash and cluster.
func (f *fakeAdmin) CreateToken(_ context.Context, req *fedgatepb.CreateTokenRequest) (*fedgatepb.CreateTokenResponse, error) {
	name := req.GetClusterName()
	if name == "" {
		name = "NAME"
	}
	const tok, hash = "abcdef.0123456789abcdef", "sha256:0000000000000000000000000000000000000000000000000000000000000000"
	return &fedgatepb.CreateTokenResponse{
		Token: tok, CaHash: hash, HubAddress: "hub.example:9443",
		Info:        &fedgatepb.TokenInfo{Id: "abcdef", UsagesLeft: 1, ExpiresUnix: time.Now().Add(time.Hour).Unix()},
		JoinCommand: "hubctl join --hub hub.example:9443 --token " + tok + " --ca-hash " + hash + " --cluster-name " + name,
	}, nil
}

// token create prints a join command for each way to run a spoke: credentials in a directory for a spoke started by
// hand, and credentials in a Secret with the spoke installed into a Kubernetes cluster. Both must be commands hubctl
// join accepts.
func TestTokenCreatePrintsFileAndKubernetesJoins(t *testing.T) {
	_, addr := startHub(t)
	stdout, stderr, code := hubctl(t, "", "--hub", addr, "token", "create", "--cluster-name", "east")
	if code != 0 {
		t.Fatalf("token create: exit %d: %s", code, stderr)
	}
	var cmds [][]string
	for _, line := range strings.Split(stdout, "\n") {
		if l := strings.TrimSpace(line); strings.HasPrefix(l, "hubctl join ") {
			cmds = append(cmds, strings.Fields(l))
		}
	}
	if len(cmds) != 2 {
		t.Fatalf("token create printed %d join commands, want 2 (files, Kubernetes):\n%s", len(cmds), stdout)
	}
	if strings.Contains(strings.Join(cmds[0], " "), "--kubeconfig") || !strings.Contains(stdout, "./fedgate-east") {
		t.Errorf("the first command should write files (./fedgate-east):\n%s", stdout)
	}
	kube := strings.Join(cmds[1], " ")
	if !strings.HasPrefix(kube, strings.Join(cmds[0], " ")+" ") || !strings.Contains(kube, " --kubeconfig KUBECONFIG") ||
		!strings.Contains(kube, " --install") || !strings.Contains(kube, " --east-west-address ") {
		t.Errorf("the Kubernetes command %q: want the same join with --kubeconfig, --east-west-address and --install", kube)
	}
	join := newJoinCommand(&globalOptions{})
	root := newRootCommand(&globalOptions{})
	for _, c := range cmds {
		for _, w := range c[2:] {
			if name, ok := strings.CutPrefix(w, "--"); ok && join.Flags().Lookup(name) == nil && root.PersistentFlags().Lookup(name) == nil {
				t.Errorf("printed join command passes --%s, which hubctl join does not define", name)
			}
		}
	}
}

// A join whose --ca-hash does not match the hub's CA says so, not that the hub cannot be reached: the TLS handshake
// fails, which gRPC reports as Unavailable.
func TestJoinReportsCAMismatch(t *testing.T) {
	// A hub's TLS as the hub serves it (the CA after its serving certificate, for the pin), and no services.
	ca, err := pki.New(time.Now)
	if err != nil {
		t.Fatal(err)
	}
	serving, err := ca.IssueServing([]string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	serving.Certificate = append(serving.Certificate, ca.Certificates()[0].Raw)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{serving}, MinVersion: tls.VersionTLS13})))
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)

	join := func(caHash string) (string, int) {
		_, stderr, code := hubctl(t, "", "join", "--hub", lis.Addr().String(), "--token", "abcdef.0123456789abcdef",
			"--ca-hash", caHash, "--cluster-name", "east", "--out", filepath.Join(t.TempDir(), "east"), "--timeout", "10s")
		return stderr, code
	}
	if stderr, code := join("sha256:" + strings.Repeat("00", 32)); code != 1 || !strings.Contains(stderr, "does not match --ca-hash") ||
		strings.Contains(stderr, "cannot reach") {
		t.Errorf("join with a wrong --ca-hash: exit %d, stderr %q; want the CA mismatch named", code, stderr)
	}
	// The right pin passes the handshake; this hub then has no Registration service.
	if stderr, code := join(ca.ActiveHash()); code != 1 || !strings.Contains(stderr, "does not support this command") {
		t.Errorf("join with the right --ca-hash: exit %d, stderr %q; want the handshake to pass", code, stderr)
	}
}
