package credentials

import (
	"bytes"
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
)

// LoadSecret reads credentials from the Secret namespace/name that `hubctl join --kubeconfig` wrote (its tls.key,
// tls.crt and ca.crt keys), and keeps every renewal in that Secret, so a restarted spoke starts from the newest
// certificate — a mounted Secret is read-only, and one restarted past the first certificate's lifetime would need a
// new join. Only those three keys of the Secret are written.
func LoadSecret(ctx context.Context, client kubernetes.Interface, namespace, name string) (*Store, error) {
	sec, err := client.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("read Secret %s/%s: %w", namespace, name, err)
	}
	for _, k := range []string{KeyFile, CertFile, CAFile} {
		if len(sec.Data[k]) == 0 {
			return nil, fmt.Errorf("Secret %s/%s has no %s (write it with hubctl join --kubeconfig)", namespace, name, k)
		}
	}
	s := &Store{
		save: func(ctx context.Context, keyPEM, certPEM, caPEM []byte) error {
			return writeSecret(ctx, client, namespace, name, keyPEM, certPEM, caPEM)
		},
	}
	// held reads the Secret and says whether it still holds this agent's certificate.
	held := func(ctx context.Context) (*corev1.Secret, bool, error) {
		cur, err := client.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil, false, nil
		}
		if err != nil {
			return nil, false, err
		}
		s.mu.RLock()
		defer s.mu.RUnlock()
		return cur, bytes.Equal(cur.Data[CertFile], s.certPEM), nil
	}
	s.held = func(ctx context.Context) (bool, error) {
		_, ours, err := held(ctx)
		return ours, err
	}
	s.discard = func(ctx context.Context) error {
		// Only the identity this agent holds: a Secret a later join rewrote belongs to the cluster's new agent.
		cur, ours, err := held(ctx)
		if err != nil || !ours {
			return err
		}
		err = client.CoreV1().Secrets(namespace).Delete(ctx, name, metav1.DeleteOptions{
			Preconditions: &metav1.Preconditions{UID: &cur.UID, ResourceVersion: &cur.ResourceVersion}})
		if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			return nil // gone, or rewritten since: not ours to delete
		}
		return err
	}
	if err := s.set(sec.Data[CertFile], sec.Data[KeyFile], sec.Data[CAFile]); err != nil {
		return nil, fmt.Errorf("credentials in Secret %s/%s: %w", namespace, name, err)
	}
	return s, nil
}

// writeSecret replaces the credential keys of the Secret, retrying on conflicts with other writers (another replica
// of the cluster's spoke renewing too: any of their certificates is valid, the last write stays).
func writeSecret(ctx context.Context, client kubernetes.Interface, namespace, name string, keyPEM, certPEM, caPEM []byte) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		sec, err := client.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if sec.Data == nil {
			sec.Data = map[string][]byte{}
		}
		sec.Data[KeyFile], sec.Data[CertFile], sec.Data[CAFile] = keyPEM, certPEM, caPEM
		_, err = client.CoreV1().Secrets(namespace).Update(ctx, sec, metav1.UpdateOptions{})
		return err
	})
}

// SecretRBACRules are the permissions LoadSecret's Store needs on its Secret (in the Secret's namespace): read it,
// keep renewals in it, and delete it (Discard) once the cluster was removed.
func SecretRBACRules(name string) []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{name},
		Verbs: []string{"get", "update", "delete"}}}
}
