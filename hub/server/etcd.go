package server

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fedgate/fedgate/hub/store"
	"github.com/fedgate/fedgate/internal/atomicfile"
)

// keyEncryptionKeyFile is where a hub with the embedded etcd keeps its key-encryption key when none is given, in its
// data dir beside etcd's own: etcd's values, snapshots and backups then hold no key material, though the data dir does.
const keyEncryptionKeyFile = "key-encryption-key"

// validateEtcdTLS checks that the etcd TLS files go with the endpoints: files only for an external etcd, all of its
// endpoints https:// when they are given, an https:// endpoint only with a CA to verify it, and http:// ones only with
// EtcdAllowPlaintext.
func (c Config) validateEtcdTLS() []error {
	var errs []error
	if (c.EtcdCert == "") != (c.EtcdKey == "") {
		errs = append(errs, errors.New("etcd-cert and etcd-key: give both or neither"))
	}
	if c.EtcdCert != "" && c.EtcdCA == "" {
		errs = append(errs, errors.New("etcd-cert: needs etcd-ca, the CA that verifies the etcd servers"))
	}
	if len(c.EtcdEndpoints) == 0 {
		if c.EtcdCA != "" || c.EtcdCert != "" {
			errs = append(errs, errors.New("etcd-ca, etcd-cert, etcd-key: only with etcd-endpoints (the embedded etcd uses certificates it makes in its data dir)"))
		}
		return errs
	}
	for _, ep := range c.EtcdEndpoints {
		u, err := url.Parse(ep)
		switch {
		case err != nil || u.Host == "":
			errs = append(errs, fmt.Errorf("etcd-endpoints %q: want http://HOST:PORT or https://HOST:PORT", ep))
		case u.Scheme == "https" && c.EtcdCA == "":
			errs = append(errs, fmt.Errorf("etcd-endpoints %s: https needs etcd-ca (the CA of the etcd servers) and, when etcd checks client certificates, etcd-cert and etcd-key", ep))
		case u.Scheme == "http" && c.EtcdCA != "":
			errs = append(errs, fmt.Errorf("etcd-endpoints %s: plaintext, but etcd-ca is given: use https://", ep))
		case u.Scheme == "http" && !c.EtcdAllowPlaintext:
			errs = append(errs, fmt.Errorf("etcd-endpoints %s: plaintext: whoever reaches etcd reads and writes the hub's state; "+
				"use https:// with etcd-ca (and etcd-cert, etcd-key), or etcd-allow-plaintext for a throwaway test etcd", ep))
		case u.Scheme != "http" && u.Scheme != "https":
			errs = append(errs, fmt.Errorf("etcd-endpoints %q: want http://HOST:PORT or https://HOST:PORT", ep))
		}
	}
	return errs
}

// openStore connects the hub to etcd — the embedded server it starts in DataDir, or the external cluster of
// EtcdEndpoints over TLS with EtcdCA, EtcdCert and EtcdKey — and opens the store with the key-encryption keys. It
// returns the checks to pass before the store is used, which Start runs at once with its own first calls to etcd:
// one refuses to go on when etcd holds key rings sealed with a key-encryption key the hub lacks, the other clears
// the presence a previous process of this hub left.
func (h *Hub) openStore(ctx context.Context, cfg Config) ([]func() error, error) {
	kekFile := cfg.KeyEncryptionKeyFile
	var kek *store.KeyEncryptionKeys
	var err error
	if kekFile != "" {
		kek, err = store.LoadKeyEncryptionKeys(kekFile)
	} else {
		kekFile = filepath.Join(cfg.DataDir, keyEncryptionKeyFile)
		kek, err = store.LoadOrCreateKeyEncryptionKeys(kekFile)
	}
	if err != nil {
		return nil, fmt.Errorf("key-encryption-key-file %s: %w", kekFile, err)
	}

	replica, err := hubReplica(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	opts := store.Options{MaxTxnOps: cfg.EtcdMaxTxnOps, KeyEncryptionKeys: kek, Logger: h.log.With("component", "store"), Replica: replica}
	endpoints := cfg.EtcdEndpoints
	var tlsCfg *tls.Config
	if len(endpoints) == 0 {
		h.etcd, err = store.StartEmbedded(ctx, store.EmbeddedConfig{
			DataDir: cfg.DataDir, ClientPort: cfg.EtcdClientPort, PeerPort: cfg.EtcdPeerPort, LogLevel: cfg.EtcdLogLevel,
		})
		if err != nil {
			return nil, err
		}
		endpoints = h.etcd.Endpoints()
		opts.MaxTxnOps, opts.MaxRequestBytes = store.EmbeddedMaxTxnOps, store.EmbeddedMaxRequestBytes
		files := h.etcd.ClientFiles()
		h.log.Info("embedded etcd started", "dataDir", cfg.DataDir, "endpoints", endpoints,
			"clientCA", files.CA, "clientCert", files.Cert, "clientKey", files.Key)
		h.cli, err = h.etcd.Connect(ctx)
	} else {
		if cfg.EtcdCA != "" {
			tlsCfg, err = store.ClientTLS(store.TLSFiles{CA: cfg.EtcdCA, Cert: cfg.EtcdCert, Key: cfg.EtcdKey})
			if err != nil {
				return nil, err
			}
		}
		h.cli, err = store.Connect(ctx, endpoints, tlsCfg)
	}
	if err != nil {
		return nil, err
	}
	// clientv3.New does not dial eagerly: fail start-up here, with the endpoints named, rather than on the first RPC.
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	_, err = h.cli.Get(pctx, store.Prefix, clientv3.WithCountOnly(), clientv3.WithPrefix())
	cancel()
	if err != nil {
		err = fmt.Errorf("etcd %v unreachable: %w", endpoints, err)
		if tlsCfg != nil {
			if terr := tlsRefusal(endpoints[0], tlsCfg); terr != nil {
				err = fmt.Errorf("%w; TLS with %s: %w", err, endpoints[0], terr)
			}
			if cfg.EtcdCert == "" {
				err = fmt.Errorf("%w (no client certificate was given: an etcd that checks them needs etcd-cert and etcd-key)", err)
			}
		}
		return nil, err
	}
	h.store = store.New(h.cli, opts)
	secrets := func() error {
		if err := h.store.CheckSecrets(ctx); err != nil {
			if errors.Is(err, store.ErrUnknownKeyEncryptionKey) {
				return fmt.Errorf("key-encryption-key-file %s: %w; every hub sharing this etcd needs the same key file (while a key is replaced, the old one stays in it as a later line)", kekFile, err)
			}
			return err
		}
		h.log.Info("key rings sealed at rest", "keyEncryptionKeyFile", kekFile, "keyEncryptionKey", kek.ID())
		return nil
	}
	// Nothing is served yet, so any presence this replica holds is a previous process's: its clusters are not
	// connected here, whatever the keys say until their leases lapse. The embedded etcd is this hub's alone.
	presence := func() error {
		n, err := h.store.ClearPresence(ctx, h.etcd != nil)
		if err != nil {
			return err
		}
		if n > 0 {
			h.log.Info("cleared the presence a previous hub process left", "keys", n, "replica", replica)
		}
		return nil
	}
	return []func() error{secrets, presence}, nil
}

// replicaFile holds, in the data dir, the name this hub replica gives itself in the presence keys it holds.
const replicaFile = "hub-replica"

// hubReplica is this hub replica's name for store.Options.Replica: kept in dataDir so that a restarted hub knows the
// presence its previous process left; without a data dir, a new name per process (whose leftovers then lapse with
// their leases, store.PresenceTTL).
func hubReplica(dataDir string) (string, error) {
	fresh := func() string {
		b := make([]byte, 8)
		_, _ = rand.Read(b)
		return hex.EncodeToString(b)
	}
	if dataDir == "" {
		return fresh(), nil
	}
	path := filepath.Join(dataDir, replicaFile)
	if b, err := os.ReadFile(path); err == nil {
		if id := strings.TrimSpace(string(b)); id != "" {
			return id, nil
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("hub replica name: %w", err)
	}
	id := fresh()
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", fmt.Errorf("hub replica name: %w", err)
	}
	if err := atomicfile.Write(path, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("hub replica name: %w", err)
	}
	return id, nil
}

// tlsRefusal is the TLS error a handshake with endpoint meets, if any: the gRPC client retries such a failure until its
// deadline and reports only that. The server checks a client certificate after the client has finished its part of the
// handshake (TLS 1.3), so its refusal arrives on the first read.
func tlsRefusal(endpoint string, cfg *tls.Config) error {
	u, err := url.Parse(endpoint)
	if err != nil {
		return nil
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 3 * time.Second}, "tcp", u.Host, cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
	// An HTTP/2 client preface: a server that accepted the handshake answers it; one that did not sends its alert.
	if _, err := conn.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")); err != nil {
		return err
	}
	if _, err := conn.Read(make([]byte, 1)); err != nil && strings.Contains(err.Error(), "tls:") {
		return err
	}
	return nil
}
