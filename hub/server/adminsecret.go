package server

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/fedgate/fedgate/apis/clientconfig"
)

// AdminSecretKey is the key of the admin Secret holding the admin config, in the format of ~/.fedgate/config.
const AdminSecretKey = "config"

// parseAdminSecret splits NAMESPACE/NAME.
func parseAdminSecret(s string) (namespace, name string, err error) {
	namespace, name, ok := strings.Cut(s, "/")
	if !ok || len(validation.IsDNS1123Label(namespace)) > 0 || len(validation.IsDNS1123Subdomain(name)) > 0 {
		return "", "", fmt.Errorf("admin-secret %q: want NAMESPACE/NAME", s)
	}
	return namespace, name, nil
}

func (c Config) validateAdminSecret() []error {
	if c.AdminSecret == "" {
		return nil
	}
	var errs []error
	if _, _, err := parseAdminSecret(c.AdminSecret); err != nil {
		errs = append(errs, err)
	}
	if c.Kubeconfig == "" && !c.InCluster && c.HubClusterREST == nil {
		errs = append(errs, errors.New("admin-secret: needs a hub cluster (kubeconfig or in-cluster)"))
	}
	return errs
}

// bootstrapAdminSecret creates the Secret namespace/name in the hub cluster holding a new admin credential, unless
// the Secret exists (it is never overwritten: delete it and restart the hub for a new one). In a pod this is how an
// operator gets hubctl's credential — the hub's data directory is on a volume no one else reads. Only create is
// needed, so the hub's RBAC grants no read of Secrets.
func (h *Hub) bootstrapAdminSecret(ctx context.Context, rc *rest.Config, spec string, ttl time.Duration) error {
	namespace, name, err := parseAdminSecret(spec)
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	certPEM, keyPEM, err := h.ca.IssueAdmin(ttl)
	if err != nil {
		return err
	}
	b, err := yaml.Marshal(&clientconfig.Config{
		Hub: h.advertise, CABundle: string(h.ca.BundlePEM()), Certificate: string(certPEM), Key: string(keyPEM),
	})
	if err != nil {
		return err
	}
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: namespace, Name: name,
			Labels: map[string]string{"app.kubernetes.io/name": "fedgate-hub", "app.kubernetes.io/component": "admin-credential"},
		},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{AdminSecretKey: b},
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err = cs.CoreV1().Secrets(namespace).Create(ctx, sec, metav1.CreateOptions{FieldManager: "fedgate-hub"})
	switch {
	case apierrors.IsAlreadyExists(err):
		h.log.Info("admin Secret present; not rewriting it", "secret", spec)
		return nil
	case err != nil:
		return err
	}
	h.log.Info("wrote admin Secret", "secret", spec, "key", AdminSecretKey)
	return nil
}
