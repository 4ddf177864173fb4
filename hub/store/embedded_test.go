package store

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// handshake opens a TLS connection to the first endpoint of e with cfg and reads from it: the server checks a client
// certificate only after the client considers the handshake done (TLS 1.3), so its refusal arrives on the read.
func handshake(t *testing.T, e *Embedded, cfg *tls.Config) error {
	t.Helper()
	u, err := url.Parse(e.Endpoints()[0])
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", u.Host, cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	// An HTTP/2 preface, as a gRPC client sends; a server that accepted the client would answer with SETTINGS.
	if _, err := conn.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")); err != nil {
		return err
	}
	_, err = conn.Read(make([]byte, 1))
	return err
}

// getFails reports the error of a read through a client of e's endpoints with tlsCfg (nil: plaintext http://).
func getFails(t *testing.T, e *Embedded, tlsCfg *tls.Config) error {
	t.Helper()
	eps := e.Endpoints()
	if tlsCfg == nil {
		eps = []string{strings.Replace(eps[0], "https://", "http://", 1)}
	}
	cli, err := Connect(context.Background(), eps, tlsCfg)
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err = cli.Get(ctx, Prefix, clientv3.WithPrefix())
	return err
}

// The embedded etcd serves only clients holding the certificate the hub made for itself: a local user who reaches the
// port (plaintext, TLS without a certificate, or a certificate of another CA) reads nothing; the hub's client does.
func TestEmbeddedEtcdServesOnlyTheHubsClient(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	e, err := StartEmbedded(ctx, EmbeddedConfig{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	for _, ep := range e.Endpoints() {
		if !strings.HasPrefix(ep, "https://127.0.0.1:") {
			t.Fatalf("endpoint %s: want https on loopback", ep)
		}
	}

	cli, err := e.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Put(ctx, SessionKeysKey, "x"); err != nil {
		t.Fatalf("the hub's own client: %v", err)
	}
	if err := handshake(t, e, e.clientTLS); err != nil {
		t.Fatalf("the hub's own certificate: %v", err)
	}

	// The server's CA is trusted in both refused cases, so what is refused is the client, not the server.
	noCert := e.clientTLS.Clone()
	noCert.Certificates = nil
	other := embeddedTLS{dir: filepath.Join(t.TempDir(), EmbeddedTLSDir)}
	if err := other.ensure(time.Now()); err != nil {
		t.Fatal(err)
	}
	otherCA, err := ClientTLS(other.client())
	if err != nil {
		t.Fatal(err)
	}
	otherCA.RootCAs = e.clientTLS.RootCAs
	// Presented whatever CAs the server asks for (Go's client would otherwise send none).
	foreign := otherCA.Certificates[0]
	otherCA.Certificates = nil
	otherCA.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &foreign, nil }
	for name, cfg := range map[string]*tls.Config{"no client certificate": noCert, "a certificate of another CA": otherCA} {
		err := handshake(t, e, cfg)
		if err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Errorf("%s: handshake error %v, want the server's refusal of the certificate", name, err)
		}
		t.Logf("%s: %v", name, err)
		if err := getFails(t, e, cfg); err == nil {
			t.Errorf("%s: read /fedgate/ succeeded", name)
		}
	}
	if err := getFails(t, e, nil); err == nil {
		t.Error("plaintext client: read /fedgate/ succeeded")
	}

	// The certificates are private to the hub's user.
	tlsDir := filepath.Join(dir, EmbeddedTLSDir)
	st, err := os.Stat(tlsDir)
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("%s: mode %v (%v), want 0700", tlsDir, st.Mode().Perm(), err)
	}
	entries, err := os.ReadDir(tlsDir)
	if err != nil || len(entries) != 5 {
		t.Fatalf("%s holds %d files (%v), want ca.crt and the server's and client's certificate and key", tlsDir, len(entries), err)
	}
	for _, ent := range entries {
		info, err := ent.Info()
		if err != nil || info.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v (%v), want 0600", ent.Name(), info.Mode().Perm(), err)
		}
		if strings.Contains(ent.Name(), "ca.key") {
			t.Errorf("%s: the CA's key is kept", ent.Name())
		}
	}
	if f := e.ClientFiles(); filepath.Dir(f.CA) != tlsDir || filepath.Dir(f.Cert) != tlsDir || filepath.Dir(f.Key) != tlsDir {
		t.Errorf("client files %+v are not in %s", f, tlsDir)
	}
}

// A restart keeps the certificates it finds (the data dir survives restarts); a set missing a file, or one left too
// open, is replaced or tightened rather than refused.
func TestEmbeddedCertificatesAreReusedOrReplacedWhole(t *testing.T) {
	dir := t.TempDir()
	tlsDir := filepath.Join(dir, EmbeddedTLSDir)
	ctx := context.Background()
	read := func() map[string][]byte {
		out := map[string][]byte{}
		_ = filepath.WalkDir(tlsDir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				out[d.Name()], _ = os.ReadFile(p)
			}
			return nil
		})
		return out
	}
	start := func() {
		t.Helper()
		e, err := StartEmbedded(ctx, EmbeddedConfig{DataDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		defer e.Close()
		cli, err := e.Connect(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer cli.Close()
		if _, err := cli.Get(ctx, Prefix, clientv3.WithPrefix()); err != nil {
			t.Fatal(err)
		}
	}
	start()
	first := read()
	start()
	for name, b := range read() {
		if !bytes.Equal(b, first[name]) {
			t.Errorf("%s changed across a restart", name)
		}
	}

	if err := os.Remove(filepath.Join(tlsDir, embeddedClientKey)); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(tlsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	start()
	second := read()
	if len(second) != len(first) || bytes.Equal(second[embeddedCAFile], first[embeddedCAFile]) {
		t.Errorf("a set missing the client key was not replaced whole (%d files)", len(second))
	}
	if st, err := os.Stat(tlsDir); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("%s not made 0700 again: %v", tlsDir, err)
	}
}

func TestClientTLSNamesFlagAndFile(t *testing.T) {
	dir := t.TempDir()
	set := embeddedTLS{dir: dir}
	if err := set.ensure(time.Now()); err != nil {
		t.Fatal(err)
	}
	good := set.client()
	missing := filepath.Join(dir, "missing.pem")
	for _, tc := range []struct {
		files TLSFiles
		want  string
	}{
		{TLSFiles{CA: missing}, "etcd-ca " + missing},
		{TLSFiles{CA: good.Cert + "x"}, "etcd-ca " + good.Cert + "x"},
		{TLSFiles{CA: good.Key}, "etcd-ca " + good.Key + ": no PEM certificate"},
		{TLSFiles{CA: good.CA, Cert: missing, Key: good.Key}, "etcd-cert " + missing},
		{TLSFiles{CA: good.CA, Cert: good.Cert, Key: missing}, "etcd-key " + missing},
		{TLSFiles{CA: good.CA, Cert: good.Cert, Key: filepath.Join(dir, embeddedServerKey)}, "etcd-cert " + good.Cert + " and etcd-key"},
		{TLSFiles{CA: good.CA, Cert: good.Cert}, "etcd-cert and etcd-key: give both"},
	} {
		if _, err := ClientTLS(tc.files); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want one containing %q", tc.files, err, tc.want)
		}
	}
	if _, err := ClientTLS(TLSFiles{CA: good.CA}); err != nil {
		t.Errorf("a CA alone (server-only TLS): %v", err)
	}
	if _, err := ClientTLS(TLSFiles{CA: missing}); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing CA file: %v, want it to wrap fs.ErrNotExist", err)
	}
}

// A restarted embedded etcd elects itself at once and keeps what was written before. It is its cluster's only voter,
// so its election timeout does nothing but delay its own start: raft waits up to one timeout for the election at
// every start (0.1–1 s with etcd's defaults). The bound is on that timeout, which decides the wait; the restarts'
// durations are logged, as one timing on a loaded machine says little.
func TestEmbeddedRestartElectsItselfAtOnce(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	for i := range 3 {
		start := time.Now()
		e, err := StartEmbedded(ctx, EmbeddedConfig{DataDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		srv := e.etcd.Server
		if srv.Leader() != srv.MemberID() {
			e.Close()
			t.Fatalf("start %d: ready, but led by %v rather than itself", i+1, srv.Leader())
		}
		if timeout := srv.Cfg.ElectionTimeout(); timeout > 50*time.Millisecond {
			t.Errorf("start %d: election timeout %v: a single member waits up to that for its own election at every start, want ≤ 50ms", i+1, timeout)
		}
		if srv.Cfg.UnsafeNoFsync {
			t.Errorf("start %d: writes are not synced to disk", i+1)
		}
		cli, err := e.Connect(ctx)
		if err != nil {
			e.Close()
			t.Fatal(err)
		}
		resp, err := cli.Get(ctx, SessionKeysKey)
		if err == nil && i > 0 && (len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != strconv.Itoa(i)) {
			err = fmt.Errorf("read %v, want the value %d written before the restart", resp.Kvs, i)
		}
		if err == nil {
			_, err = cli.Put(ctx, SessionKeysKey, strconv.Itoa(i+1))
		}
		_ = cli.Close()
		e.Close()
		if err != nil {
			t.Fatalf("start %d: %v", i+1, err)
		}
		t.Logf("start %d: ready in %v", i+1, took.Round(time.Millisecond))
	}
}
