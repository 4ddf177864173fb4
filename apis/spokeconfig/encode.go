package spokeconfig

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
)

// MaxUpdateBytes is the largest SpokeConfigUpdate message the hub sends and a spoke receives: both sides set their
// gRPC limit from it, so they cannot disagree. The hub never sends a projection that would exceed it; it records the
// cluster's projection as too large instead (its sync state, `hubctl get clusters`) and the spoke keeps its config.
const MaxUpdateBytes = 16 << 20

// Encode returns the canonical JSON encoding of c and the hex SHA-256 of it. Equal configs encode to equal bytes
// because the hub emits every slice in a deterministic order and encoding/json sorts nothing else.
func Encode(c *SpokeConfig) ([]byte, string, error) {
	b, err := json.Marshal(c)
	if err != nil {
		return nil, "", err
	}
	return b, Hash(b), nil
}

// Hash is the hex SHA-256 of an encoded config.
func Hash(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// Decode parses an encoded config and validates it.
func Decode(b []byte) (*SpokeConfig, error) {
	var c SpokeConfig
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("decode spoke config: %w", err)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Validate checks the references inside a config: every route's backend exists, every endpoint's cluster is this one
// or a listed remote cluster, ports are unique and in range. A spoke NACKs a config that fails it.
func (c *SpokeConfig) Validate() error {
	var errs []error
	if c.Cluster == "" {
		errs = append(errs, errors.New("cluster: must not be empty"))
	}
	clusters := map[string]bool{c.Cluster: true}
	for i, cl := range c.Clusters {
		if clusters[cl.Name] {
			errs = append(errs, fmt.Errorf("clusters[%d]: duplicate or own cluster %q", i, cl.Name))
		}
		if _, _, err := net.SplitHostPort(cl.EastWestAddress); err != nil {
			errs = append(errs, fmt.Errorf("clusters[%d] %q: eastWestAddress %q: %v", i, cl.Name, cl.EastWestAddress, err))
		}
		clusters[cl.Name] = true
	}
	keyIDs := map[uint8]bool{}
	for i, k := range c.SessionKeys {
		if keyIDs[k.ID] {
			errs = append(errs, fmt.Errorf("sessionKeys[%d]: duplicate id %d", i, k.ID))
		}
		keyIDs[k.ID] = true
	}
	backends := make(map[string]bool, len(c.Backends))
	for i, b := range c.Backends {
		if backends[b.ID] {
			errs = append(errs, fmt.Errorf("backends[%d]: duplicate id %q", i, b.ID))
		}
		backends[b.ID] = true
		if hc := b.HealthCheck; hc != nil {
			switch hc.Type {
			case "", HealthCheckHTTP, HealthCheckTCP, HealthCheckGRPC:
			default:
				errs = append(errs, fmt.Errorf("backends[%d] %q healthCheck.type %q: want http, tcp or grpc", i, b.ID, hc.Type))
			}
			if hc.Path != "" && hc.Path[0] != '/' {
				errs = append(errs, fmt.Errorf("backends[%d] %q healthCheck.path %q: must start with /", i, b.ID, hc.Path))
			}
			if hc.IntervalMs < 0 || hc.TimeoutMs < 0 || hc.HealthyThreshold < 0 || hc.UnhealthyThreshold < 0 {
				errs = append(errs, fmt.Errorf("backends[%d] %q healthCheck: negative interval, timeout or threshold", i, b.ID))
			}
		}
		if bt := b.TLS; bt != nil {
			if bt.Hostname == "" {
				errs = append(errs, fmt.Errorf("backends[%d] %q tls.hostname: must not be empty", i, b.ID))
			}
			if (len(bt.CACertificatesPEM) == 0) == !bt.WellKnownSystem {
				errs = append(errs, fmt.Errorf("backends[%d] %q tls: want caCertificatesPEM or wellKnownSystem, exactly one", i, b.ID))
			}
			for k, san := range bt.SubjectAltNames {
				if (san.Type != "Hostname" && san.Type != "URI") || san.Value == "" {
					errs = append(errs, fmt.Errorf("backends[%d] %q tls.subjectAltNames[%d]: want type Hostname or URI and a value", i, b.ID, k))
				}
			}
		}
		for j, e := range b.Endpoints {
			if !clusters[e.Cluster] {
				errs = append(errs, fmt.Errorf("backends[%d] %q endpoints[%d]: cluster %q has no east-west address", i, b.ID, j, e.Cluster))
			}
			if _, _, err := net.SplitHostPort(e.Address); err != nil {
				errs = append(errs, fmt.Errorf("backends[%d] %q endpoints[%d]: address %q: %v", i, b.ID, j, e.Address, err))
			}
		}
	}
	ports := map[int32]bool{}
	for i, p := range c.Ports {
		if p.Port < 1 || p.Port > 65535 {
			errs = append(errs, fmt.Errorf("ports[%d]: port %d out of range", i, p.Port))
		}
		if ports[p.Port] {
			errs = append(errs, fmt.Errorf("ports[%d]: duplicate port %d", i, p.Port))
		}
		ports[p.Port] = true
		errs = append(errs, p.validateTLS(i)...)
		for j, vh := range p.VirtualHosts {
			for k, r := range vh.Routes {
				for l, wb := range r.Action.Backends {
					if !wb.Invalid && !backends[wb.BackendID] {
						errs = append(errs, fmt.Errorf("ports[%d].virtualHosts[%d].routes[%d].action.backends[%d]: unknown backend %q", i, j, k, l, wb.BackendID))
					}
					if wb.Weight < 0 {
						errs = append(errs, fmt.Errorf("ports[%d].virtualHosts[%d].routes[%d].action.backends[%d]: negative weight", i, j, k, l))
					}
				}
			}
		}
	}
	return errors.Join(errs...)
}

// validateTLS: an HTTPS port has TLS and an HTTP one none; each listener has a unique hostname and certificates that
// are either local references or carry both PEM blocks.
func (p *Port) validateTLS(i int) []error {
	var errs []error
	switch {
	case p.Protocol == ProtocolHTTPS && p.TLS == nil:
		return []error{fmt.Errorf("ports[%d]: protocol HTTPS without tls", i)}
	case p.Protocol != ProtocolHTTPS && p.TLS != nil:
		return []error{fmt.Errorf("ports[%d]: tls on a %s port", i, p.Protocol)}
	case p.TLS == nil:
		return nil
	}
	hosts := map[string]bool{}
	for j, l := range p.TLS.Listeners {
		if hosts[l.Hostname] {
			errs = append(errs, fmt.Errorf("ports[%d].tls.listeners[%d]: duplicate hostname %q", i, j, l.Hostname))
		}
		hosts[l.Hostname] = true
		if len(l.Certificates) == 0 {
			errs = append(errs, fmt.Errorf("ports[%d].tls.listeners[%d] %q: no certificates", i, j, l.Hostname))
		}
		if cv := l.ClientValidation; cv != nil {
			if len(cv.CACertificatesPEM) == 0 {
				errs = append(errs, fmt.Errorf("ports[%d].tls.listeners[%d] %q: clientValidation without CA certificates", i, j, l.Hostname))
			}
			if cv.Mode != AllowValidOnly && cv.Mode != AllowInsecureFallback {
				errs = append(errs, fmt.Errorf("ports[%d].tls.listeners[%d] %q: clientValidation.mode %q: want %s or %s", i, j, l.Hostname, cv.Mode, AllowValidOnly, AllowInsecureFallback))
			}
		}
		for k, c := range l.Certificates {
			if c.Local != (len(c.CertPEM) == 0 && len(c.KeyPEM) == 0) || (!c.Local && (len(c.CertPEM) == 0 || len(c.KeyPEM) == 0)) {
				errs = append(errs, fmt.Errorf("ports[%d].tls.listeners[%d].certificates[%d] %s/%s: want local, or both certPEM and keyPEM", i, j, k, c.Namespace, c.Name))
			}
		}
	}
	return errs
}
